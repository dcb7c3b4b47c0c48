"""K2 ingestors: exchange WebSockets -> trade v3 records -> Kafka.

Layout: `exchanges/` holds one declarative adapter per exchange (pure parsing and
protocol facts), `wsclient` the resilient connection logic shared by all of them,
`buffer`/`sink` the bounded hand-off to Kafka (or JSON lines), `health` the HTTP
probes and metrics, `app` the wiring, `replay/` local servers that speak the
exchanges' protocols for tests and benchmarks.
"""
