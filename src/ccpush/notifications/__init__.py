"""Operational notifications: an account (and the operator) told by webhook and e-mail when
an app starts failing, is paused by ccpush, recovers, finishes a replay or has its signing
secret rotated.

``records`` (what the store keeps), ``rules`` (when an event is due: pure), ``events`` (the
JSON and the e-mail of an event), ``mail`` (SMTP), ``runner`` (the ``Notifier``).
"""
