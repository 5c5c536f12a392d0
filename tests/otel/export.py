"""Exports metrics with the OpenTelemetry Python SDK's OTLP/HTTP exporter
to weir's POST /v1/metrics (tests/protocols.rs drives it)."""

import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

exporter = OTLPMetricExporter(endpoint=sys.argv[1])
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=500)
resource = Resource.create({"host.name": "otel-1", "service.name": "shop"})
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
