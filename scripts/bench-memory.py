#!/usr/bin/env python3
"""Memory benchmark: peak RSS of one worker container working a large range, and large records.

Two runs of `fanout local run` with ONE worker container (`--workers 1`), each job one manifest
(`split.chunk_bytes` above the file's size), against the mock API answering at once:

* range: a generated CSV of RANGE_MIB (256) MiB, records of about 1 KiB (an id and padding),
  a small POST per record (the padding is not sent); each result keeps the mock's whole echo
  (about 290 bytes), so the range's results part is about 76 MB.
* records: RECORDS (200) JSON Lines records of about 1 MiB each (input.max_record_bytes, the
  default), each sent whole as its request's body; the mock echoes it, and the result keeps the
  first 16 KiB of the answer (client.max_response_bytes, the default).

The peak RSS is the `fanout` process's (ru_maxrss from wait4): the worker container's handler,
and also the local runner in the same process (its SQS polling, the splitter that ran first, the
summary); the local AWS and the mock API run in other processes and are not counted. Last line:
one JSON object.

Run it on the local stack: scripts/with-stack.sh scripts/bench-memory.py [--only range|records]
(`make bench-memory` builds the release binaries first). BENCH_BIN_DIR=dir: another build's
binaries (a before/after).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MIB = 1 << 20

RANGE_PIPELINE = """\
# scripts/bench-memory.py, the range run: one manifest of the whole file.
input:
  format: csv
  fields:
    - { name: id, type: integer, required: true }
    - { name: pad }
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/items/{id}"
  body:
    id: "{id}"
client:
  concurrency: 64
  timeout_ms: 5000
  max_attempts: 3
  rate_limit_name: bench-memory
  rate_limit_per_sec: 1000000
  rate_limit_burst: 100000
split:
  chunk_bytes: %d
"""

RECORDS_PIPELINE = """\
# scripts/bench-memory.py, the records run: records of about 1 MiB, each sent whole.
input:
  format: jsonl
request:
  method: POST
  url: "{{API_BASE_URL}}/v1/blobs/{id}"
  body:
    id: "{id}"
    blob: "{blob}"
client:
  concurrency: 64
  timeout_ms: 30000
  max_attempts: 3
  rate_limit_name: bench-memory
  rate_limit_per_sec: 1000000
  rate_limit_burst: 100000
split:
  chunk_bytes: %d
"""


def range_file(path, mib):
    """A CSV of `mib` MiB: a header, then records of about 1 KiB. Gives the record count."""
    records = 0
    with open(path, "w") as f:
        f.write("id,pad\n")
        size = 7
        pad = "x" * 1000
        while size < mib * MIB:
            line = f"{records},{pad}\n"
            f.write(line)
            size += len(line)
            records += 1
    return records


def records_file(path, n):
    """`n` JSON Lines records of just under 1 MiB (the default input.max_record_bytes)."""
    blob = "y" * (MIB - 64)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "blob": blob}) + "\n")
    return n


def run(name, data, pipeline_text, records, api):
    pipeline = os.path.join(benchlib.LOCAL, f"bench-memory-{name}.yaml")
    with open(pipeline, "w") as f:
        f.write(pipeline_text)
    summary, wall, usage = benchlib.local_run(data, pipeline, f"bench-memory-{name}", api, 1)
    succeeded = summary.get("succeeded", 0)
    if succeeded != records:
        sys.exit(f"bench-memory: {name}: {succeeded} of {records} records succeeded: {summary}")
    result = {
        "records": records,
        "input_mib": round(os.path.getsize(data) / MIB, 1),
        "wall_s": round(wall, 2),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range-mib", type=int, default=int(os.environ.get("RANGE_MIB", 256)))
    parser.add_argument("--records", type=int, default=int(os.environ.get("RECORDS", 200)))
    parser.add_argument("--only", choices=["range", "records"])
    parser.add_argument("--label", default=os.environ.get("LABEL", ""))
    args = parser.parse_args()
    benchlib.need_stack("bench-memory")
    local = benchlib.LOCAL
    os.makedirs(local, exist_ok=True)
    result = {"label": args.label, "workers": 1}
    with benchlib.Mock("--latency-ms", "0", log_name="bench-memory-mock.log") as mock:
        api = mock.url
        if args.only in (None, "range"):
            data = os.path.join(local, f"bench-memory-range-{args.range_mib}.csv")
            count_file = data + ".records"
            if not os.path.exists(count_file):
                n = range_file(data, args.range_mib)
                with open(count_file, "w") as f:
                    f.write(str(n))
            with open(count_file) as f:
                n = int(f.read())
            chunk = os.path.getsize(data) + MIB
            result["range"] = run("range", data, RANGE_PIPELINE % chunk, n, api)
        if args.only in (None, "records"):
            data = os.path.join(local, f"bench-memory-records-{args.records}.jsonl")
            if not os.path.exists(data):
                records_file(data, args.records)
            chunk = os.path.getsize(data) + MIB
            result["records"] = run("records", data, RECORDS_PIPELINE % chunk, args.records, api)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
