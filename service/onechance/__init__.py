"""onechance: follows every Asterisk queue call over AMI and makes lost callers visible at once."""

__version__ = "0.1.0"
