"""The node's policy server (auth failure rate limiting, outbound rate limit)."""
