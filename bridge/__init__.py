"""mogli-bridge: Mogli Scheduler bookings to Salesforce, by change data capture."""

__version__ = "0.1.0"
