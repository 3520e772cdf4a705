//! Reading a stored message back, one chunk per call: [`MessageReader`].

use apimail_core::outbox::EntryId;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{self, StoreError};
use crate::store::Store;

impl Store {
    /// The message of entry `id`, read a chunk at a time; `None` if there
    /// is no such entry.
    pub async fn open_message(&self, id: &str) -> Result<Option<MessageReader>, StoreError> {
        let id = EntryId::parse(id)?;
        let client = self.client("read a message").await?;
        let row = client
            .query_opt(
                "SELECT message FROM apimail_entries WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(error::query("read a message"))?;
        drop(client);
        match row {
            Some(row) => Ok(Some(self.message_reader(row.get(0)).await?)),
            None => Ok(None),
        }
    }

    /// The reader of stored message `message`.
    pub(crate) async fn message_reader(&self, message: i64) -> Result<MessageReader, StoreError> {
        self.messages_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chunks: i64 = self
            .client("read a message")
            .await?
            .query_one(
                "SELECT count(*) FROM apimail_chunks WHERE message = $1",
                &[&message],
            )
            .await
            .map_err(error::query("read a message"))?
            .get(0);
        Ok(MessageReader {
            store: self.clone(),
            message,
            next: 0,
            chunks: i32::try_from(chunks).unwrap_or(i32::MAX),
        })
    }

    /// The whole message of entry `id` in memory (small messages, tests);
    /// stream large ones with [`open_message`](Self::open_message).
    pub async fn read_message(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut reader) = self.open_message(id).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }
}

/// An entry's message, read one chunk per call; see
/// [`Store::open_message`].
#[derive(Debug)]
pub struct MessageReader {
    store: Store,
    message: i64,
    next: i32,
    chunks: i32,
}

impl MessageReader {
    /// How many chunks the message has.
    pub fn chunks(&self) -> usize {
        usize::try_from(self.chunks).unwrap_or(0)
    }

    /// The next chunk (at most 1 MiB), or `None` after the last.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.next >= self.chunks {
            return Ok(None);
        }
        let client = self.store.client("read a message").await?;
        let row = client
            .query_opt(
                "SELECT data FROM apimail_chunks WHERE message = $1 AND seq = $2",
                &[&self.message, &self.next],
            )
            .await
            .map_err(error::query("read a message"))?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt {
                what: "message",
                reason: format!("chunk {} is gone (the entry was removed)", self.next),
            });
        };
        self.next += 1;
        Ok(Some(row.get(0)))
    }

    /// Writes the rest of the message to `out`, a chunk at a time.
    pub async fn copy_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> Result<u64, StoreError> {
        let mut written = 0;
        while let Some(chunk) = self.next_chunk().await? {
            out.write_all(&chunk).await.map_err(StoreError::Read)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(StoreError::Read)?;
        Ok(written)
    }
}
