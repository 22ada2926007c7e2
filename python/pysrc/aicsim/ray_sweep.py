"""The helper `aic-configurator -ray-address=ADDR` drives: connects to the Ray cluster,
then evaluates each round of points it is sent on the cluster.

    python -m aicsim.ray_sweep --address ADDR --model MODEL

Reads one JSON line per round (`{"jobs": [job, ...]}`) and answers one
(`{"results": [{"ok": prediction} | {"error": reason}, ...]}`); before the first, writes
`{"ready": true, "cluster": "..."}`. Exits at the end of its input.
"""

import argparse
import json
import sys

from .sweep import RayRound, connect


def main():
    ap = argparse.ArgumentParser(prog="python -m aicsim.ray_sweep")
    ap.add_argument("--address", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    # Ray writes to stdout when it starts; our protocol owns stdout, so it goes to stderr.
    out = sys.stdout
    sys.stdout = sys.stderr
    cluster = connect(a.address)
    round_ = RayRound(a.model)
    out.write(json.dumps({"ready": True, "cluster": cluster}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        jobs = [json.dumps(job) for job in json.loads(line)["jobs"]]
        results = [json.loads(r) for r in round_(jobs)]
        out.write(json.dumps({"results": results}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
