"""The moto server, with DynamoDB's per-item atomicity.

moto's threaded server applies concurrent DynamoDB writes to the same item without a lock, so two
`ADD` updates racing on one item can lose one of them (seen here: a job's `records` counter short
by a manifest's worth while its `succeeded` was right). DynamoDB guarantees that every write to an
item is atomic, and the ledger relies on it (counters added in conditional transactions). This
wrapper serializes moto's DynamoDB operations with one lock, which restores that guarantee; other
services (SQS long polls) are untouched.
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_LOCK = threading.RLock()

for _name in (
    "put_item",
    "get_item",
    "query",
    "scan",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
    "execute_statement",
):
    _original = getattr(DynamoDBBackend, _name)

    @functools.wraps(_original)
    def _locked(self, *args, __original=_original, **kwargs):
        with _LOCK:
            return __original(self, *args, **kwargs)

    setattr(DynamoDBBackend, _name, _locked)

if __name__ == "__main__":
    main(sys.argv[1:])
