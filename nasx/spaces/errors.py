class EncodingError(ValueError):
    """An architecture string that does not follow its grammar; the message says where and why."""
