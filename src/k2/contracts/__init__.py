"""Contracts every part of K2 imports: the trade v3 schema, the table specs, topics."""
