"""Exports metrics with the OpenTelemetry Python SDK's OTLP exporter to
weir: `export.py http URL` (POST /v1/metrics) or `export.py grpc HOST:PORT`
(MetricsService/Export, insecure); tests/protocols.rs drives it."""

import sys

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

if sys.argv[1] == "grpc":
    exporter = GrpcExporter(endpoint=sys.argv[2], insecure=True)
else:
    exporter = HttpExporter(endpoint=sys.argv[2])
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=500)
resource = Resource.create({"host.name": "otel-" + sys.argv[1], "service.name": "shop"})
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("weir-test")

orders = meter.create_counter("orders", unit="1")
orders.add(3, {"region": "eu"})
latency = meter.create_histogram("latency", unit="ms")
for value in (10, 20, 30, 40):
    latency.record(value)
meter.create_observable_gauge("queue", callbacks=[lambda options: [Observation(7)]])

provider.force_flush()
provider.shutdown()
