"""Resource namespaces of the client: each module holds a sync and an async class
over the same pure request builders and response parsers."""
