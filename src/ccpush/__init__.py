"""ccpush: push call-center call records to customers' cc-http push addresses."""

__version__ = "0.1.0"
