"""lvstop-exporter: Prometheus metrics, a JSON API and the write API over the shared poller and Control."""
