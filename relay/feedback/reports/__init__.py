"""Bounces and complaints: parsing them (RFC 3464, RFC 5965, the free-text shapes), judging
whether they are authentic, and turning them into suppressions, events and rates."""
