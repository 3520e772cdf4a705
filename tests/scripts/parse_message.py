#!/usr/bin/env python3
"""Parse one RFC 5322 message with Python's email package (policy=strict)
and print its fields as JSON, for apimail's end-to-end tests.

Usage: parse_message.py FILE.eml

Exits non-zero, with the defect on stderr, if the parser finds any defect.
"""

import base64
import email
import email.policy
import json
import sys


def addresses(msg, name):
    header = msg[name]
    if header is None:
        return []
    return [[a.display_name or None, a.addr_spec] for a in header.addresses]


def main():
    with open(sys.argv[1], "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.strict)
    out = {
        "from": addresses(msg, "From"),
        "to": addresses(msg, "To"),
        "cc": addresses(msg, "Cc"),
        "bcc": addresses(msg, "Bcc"),
        "subject": str(msg["Subject"]) if msg["Subject"] is not None else None,
        "message_id": str(msg["Message-ID"]).strip(),
        "date": str(msg["Date"]),
        "content_type": msg.get_content_type(),
        "text": None,
        "html": None,
        "attachments": [],
    }
    for part in msg.walk():
        if part.defects:
            raise SystemExit(f"defects in {part.get_content_type()}: {part.defects}")
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        ctype = part.get_content_type()
        if disposition is None and ctype == "text/plain" and out["text"] is None:
            out["text"] = part.get_content().replace("\r\n", "\n")
        elif disposition is None and ctype == "text/html" and out["html"] is None:
            out["html"] = part.get_content().replace("\r\n", "\n")
        else:
            cid = part["Content-ID"]
            out["attachments"].append({
                "filename": part.get_filename(),
                "content_type": ctype,
                "disposition": disposition,
                "content_id": str(cid).strip() if cid is not None else None,
                "data_b64": base64.b64encode(part.get_payload(decode=True)).decode(),
            })
    if msg.defects:
        raise SystemExit(f"message defects: {msg.defects}")
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
