"""`relay serve`: the relay assembled from its parts, in the main process and in the SMTP
worker processes."""
