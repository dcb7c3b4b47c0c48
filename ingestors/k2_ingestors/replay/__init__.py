"""Local servers that speak Binance's and Kraken's WebSocket protocols, for tests and benchmarks."""
