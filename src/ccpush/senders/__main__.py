"""A push process: ``python -m ccpush.senders FD`` (see ``ccpush.senders.processes``)."""

from ccpush.senders.processes import main

main()
