"""K2: crypto market data from exchange WebSockets to an Iceberg lakehouse."""

__version__ = "0.1.0"
