"""Many orgs from one change stream (CONTRACT §9): each org's runtime, the fleet of them, their settings."""
