//! The filtered log as CSV, streamed page by page: the rows the log shows
//! (each message's latest record, newest first), written by
//! `apimail_core::journal_csv`, the writer of `apimail log --csv`.

use std::sync::Arc;

use apimail_core::journal_csv;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::index::{Cursor, Query};
use crate::state::Console;

/// Rows read from the index per chunk.
const CHUNK_ROWS: usize = 500;

/// The CSV of every message `query` matches, as a streamed download. The
/// index is brought up to date once, before the first row, so the file is
/// one consistent set of rows.
pub(crate) fn csv_response(console: Arc<Console>, query: Query) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if sender
            .send(Ok(journal_csv::header_row().into()))
            .await
            .is_err()
        {
            return;
        }
        let mut cursor: Option<Cursor> = None;
        let mut first = true;
        loop {
            let query = query.clone();
            let page = console
                .with_index(first, move |index| index.page(&query, cursor, CHUNK_ROWS))
                .await;
            first = false;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!("the CSV download stopped: {error}");
                    let _ = sender
                        .send(Err(std::io::Error::other("index failed")))
                        .await;
                    return;
                }
            };
            let mut chunk = Vec::new();
            for row in &page.rows {
                chunk.extend(journal_csv::record_row(&row.record));
            }
            if sender.send(Ok(chunk.into())).await.is_err() {
                return; // the client went away
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"apimail-log.csv\""),
    );
    response
}
