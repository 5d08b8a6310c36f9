"""Reads a TensorBoard event file with tensorboard's own loader (which verifies the record CRCs)
and prints its scalars as JSON lines: {"tag": ..., "step": ..., "value": ...}.

Usage: read_tensorboard.py EVENT_FILE
"""
import json
import sys

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def main():
    events = list(EventFileLoader(sys.argv[1]).Load())
    if not events or events[0].file_version != "brain.Event:2":
        sys.exit("first record is not the file-version event")
    for event in events[1:]:
        for value in event.summary.value:
            # The loader upgrades simple_value scalars to tensors with a scalars plugin marker.
            number = value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value
            print(json.dumps({"tag": value.tag, "step": event.step, "value": number}))


if __name__ == "__main__":
    main()
