"""Parses OpenMetrics text from stdin with prometheus_client's own (strict) parser and prints
its samples as JSON: {"<sample name>": [[{labels}, value], ...]}. A text the parser refuses
exits 1 with the parser's reason."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = {}
try:
    for family in text_string_to_metric_families(sys.stdin.read()):
        for s in family.samples:
            samples.setdefault(s.name, []).append([s.labels, s.value])
except Exception as e:  # the parser raises ValueError and friends
    print(f"not OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(samples, sys.stdout)
