"""An HTTPS webhook receiver for the TLS tests: serves CERT/KEY on
127.0.0.1:PORT and appends every POST body as one line to OUT.

Usage: python3 https_hook.py PORT CERT KEY OUT
"""
import http.server
import ssl
import sys

port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = http.server.HTTPServer(("127.0.0.1", port), Hook)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
