"""Send one message through the Gmail API the way Google's Python quickstart
and send-message samples do: google-auth loads a stored token.json (and
refreshes it when expired), google-api-python-client builds the service, and
the message goes as base64url JSON `raw`, or through a resumable media upload
when --upload is given (the client library's documented way for large
bodies).

The bench points it at the local fake in two places. The API: the service
is built from the library's bundled discovery document with its rootUrl
replaced, because client_options' api_endpoint does not move the media
upload path. The token endpoint: with_token_uri, because google-auth
ignores the token_uri stored in token.json and always uses Google's.
It prints nothing on success.
"""

import argparse
import base64
import io
import json
import mimetypes
import os
from email.message import EmailMessage

from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.http import MediaIoBaseUpload

SCOPES = ["https://www.googleapis.com/auth/gmail.send"]


def load_credentials(token_file, token_uri):
    loaded = Credentials.from_authorized_user_file(token_file, SCOPES)
    creds = loaded.with_token_uri(token_uri)
    creds.expiry = loaded.expiry  # the copy drops it
    if not creds.valid:
        creds.refresh(Request())
        with open(token_file, "w") as token:
            token.write(creds.to_json())
    return creds


def compose(args):
    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = args.to
    message["Subject"] = args.subject
    message.set_content(args.text)
    for path in args.attach:
        ctype, _ = mimetypes.guess_type(path)
        maintype, subtype = (ctype or "application/octet-stream").split("/", 1)
        with open(path, "rb") as f:
            message.add_attachment(
                f.read(), maintype=maintype, subtype=subtype,
                filename=os.path.basename(path))
    return message


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--token", required=True, help="token.json")
    parser.add_argument("--token-uri", required=True)
    parser.add_argument("--api-endpoint", required=True)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--attach", action="append", default=[])
    parser.add_argument("--upload", action="store_true")
    args = parser.parse_args()

    creds = load_credentials(args.token, args.token_uri)
    discovery = json.loads(get_static_doc("gmail", "v1"))
    discovery["rootUrl"] = args.api_endpoint
    service = build_from_document(discovery, credentials=creds)
    message = compose(args)
    if args.upload:
        media = MediaIoBaseUpload(io.BytesIO(message.as_bytes()),
                                  mimetype="message/rfc822", resumable=True)
        request = service.users().messages().send(userId="me", body={}, media_body=media)
    else:
        raw = base64.urlsafe_b64encode(message.as_bytes()).decode()
        request = service.users().messages().send(userId="me", body={"raw": raw})
    request.execute()


if __name__ == "__main__":
    main()
