"""The one package that knows Kimi's wire format: request bodies, replies, streams, usage
fields, reasoning round-trips, error types, retries, files and batches."""
