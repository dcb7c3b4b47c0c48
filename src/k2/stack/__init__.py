"""The local stack: real Kafka, Schema Registry, Iceberg catalog and Kubernetes API on 127.0.0.1."""
