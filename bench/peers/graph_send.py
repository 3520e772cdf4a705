"""Send one message through Microsoft Graph with msgraph-sdk, the way its
documentation shows: a JSON `sendMail` for ordinary messages, and for large
attachments a draft, an attachment upload session, then `send`.

The upload session's chunks are PUT with httpx, as Graph's upload guide
describes, not with msgraph-core's LargeFileUploadTask: in msgraph-core 1.5.2
that task turns the `nextExpectedRanges` Graph returns for attachments (a bare
offset, "4194304") into "4194304-" and fails on int('').

azure-identity cannot be pointed at the local fake: MSAL, under it, accepts
only https authorities. The token therefore comes from CachedToken below, a
small azure-core credential that reads a cached token and refreshes it with
one refresh-token POST, as MSAL's token cache would. It does less work than
azure-identity, so it flatters this peer, if anything.

It prints nothing on success.
"""

import argparse
import asyncio
import json
import mimetypes
import os
import time

import httpx
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)

# Graph takes attachments inline up to 3 MB; larger ones need an upload session.
INLINE_ATTACHMENT_LIMIT = 3 * 1024 * 1024
CHUNK = 4 * 1024 * 1024 - 64 * 1024  # a multiple of 320 KiB below 4 MiB
CHUNK -= CHUNK % (320 * 1024)


class CachedToken:
    """An async azure-core token credential over a JSON token cache."""

    def __init__(self, path):
        self.path = path
        with open(path) as f:
            self.cache = json.load(f)

    async def get_token(self, *scopes, **kwargs):
        if self.cache["expires_at"] <= time.time() + 60:
            await self.refresh()
        return AccessToken(self.cache["access_token"], int(self.cache["expires_at"]))

    async def refresh(self):
        async with httpx.AsyncClient() as http:
            response = await http.post(self.cache["token_url"], data={
                "grant_type": "refresh_token",
                "client_id": self.cache["client_id"],
                "refresh_token": self.cache["refresh_token"],
                "scope": self.cache["scope"],
            })
        response.raise_for_status()
        token = response.json()
        self.cache["access_token"] = token["access_token"]
        self.cache["refresh_token"] = token.get("refresh_token", self.cache["refresh_token"])
        self.cache["expires_at"] = time.time() + int(token["expires_in"])
        with open(self.path, "w") as f:
            json.dump(self.cache, f)

    async def close(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        pass


def client_for(args):
    host = httpx.URL(args.graph_url).host
    auth = AzureIdentityAuthenticationProvider(
        CachedToken(args.token), scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = args.graph_url.rstrip("/") + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def file_attachment(path):
    ctype, _ = mimetypes.guess_type(path)
    with open(path, "rb") as f:
        return FileAttachment(
            odata_type="#microsoft.graph.fileAttachment",
            name=os.path.basename(path),
            content_type=ctype or "application/octet-stream",
            content_bytes=f.read())


async def send(args):
    client = client_for(args)
    message = Message(
        subject=args.subject,
        body=ItemBody(content_type=BodyType.Text, content=args.text),
        to_recipients=[Recipient(email_address=EmailAddress(address=args.to))],
    )
    small = [p for p in args.attach if os.path.getsize(p) <= INLINE_ATTACHMENT_LIMIT]
    large = [p for p in args.attach if p not in small]
    message.attachments = [file_attachment(p) for p in small]
    if not large:
        await client.me.send_mail.post(SendMailPostRequestBody(message=message))
        return

    draft = await client.me.messages.post(message)
    draft_api = client.me.messages.by_message_id(draft.id)
    for path in large:
        size = os.path.getsize(path)
        session = await draft_api.attachments.create_upload_session.post(
            CreateUploadSessionPostRequestBody(attachment_item=AttachmentItem(
                attachment_type=AttachmentType.File,
                name=os.path.basename(path), size=size)))
        await upload(session.upload_url, path, size)
    await draft_api.send.post()


async def upload(url, path, size):
    """PUTs the file to a pre-authenticated upload URL, in order, in chunks."""
    async with httpx.AsyncClient(timeout=60) as http:
        with open(path, "rb") as f:
            start = 0
            while start < size:
                chunk = f.read(CHUNK)
                end = start + len(chunk) - 1
                response = await http.put(url, content=chunk, headers={
                    "Content-Range": f"bytes {start}-{end}/{size}",
                    "Content-Type": "application/octet-stream",
                })
                response.raise_for_status()
                start = end + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--token", required=True, help="cached token JSON")
    parser.add_argument("--graph-url", required=True, help="Graph root, without /v1.0")
    parser.add_argument("--to", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--attach", action="append", default=[])
    args = parser.parse_args()
    asyncio.run(send(args))


if __name__ == "__main__":
    main()
