//! How a server stops. A stop is graceful — calls in flight are answered — but a watch, a
//! keep-alive or an observation is a call that never ends: as the stop begins, `Until` ends
//! each with a last answer (the client server's: etcd's "server stopped"). A client that
//! stops reading cannot be told and holds its last answer, which would hold the stop forever
//! (tonic's graceful shutdown waits for every connection to close). So once the stop's grace
//! has passed, every connection still open is shut down at the socket: it reads as closed
//! and fails every write, its task ends, and the client meets a member that went away. etcd
//! does the same (`GracefulStop`, then `Stop` once its request timeout has passed).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's open connections, by a number of their own.
#[derive(Default)]
pub struct Connections {
    open: Mutex<(u64, HashMap<u64, RawFd>)>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, (u64, HashMap<u64, RawFd>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `io`, counted among the connections until it is dropped.
    pub fn track<IO: AsRawFd>(self: &Arc<Self>, io: IO) -> Severable<IO> {
        let mut open = self.open();
        open.0 += 1;
        let id = open.0;
        open.1.insert(id, io.as_raw_fd());
        Severable {
            io,
            id,
            connections: self.clone(),
        }
    }

    /// Shuts every open connection down both ways. Under the lock a connection leaves the
    /// map before its descriptor is closed, so no descriptor here has been reused.
    pub fn cut(&self) {
        for fd in self.open().1.values() {
            let _ = shutdown(*fd, Shutdown::Both);
        }
    }
}

/// A tracked connection.
pub struct Severable<IO> {
    io: IO,
    id: u64,
    connections: Arc<Connections>,
}

impl<IO> Drop for Severable<IO> {
    fn drop(&mut self) {
        // Before `io` (a field) closes the descriptor.
        self.connections.open().1.remove(&self.id);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Severable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Severable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Severable<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A server's stop as its streams see it: true once the server has begun to stop.
pub(crate) type Stopping = tokio::sync::watch::Receiver<bool>;

/// A stream that ends when its server stops: with one last item, if it has one.
pub(crate) struct Until<S: tokio_stream::Stream> {
    stream: S,
    /// None once the stop has come.
    stop: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    last: Option<S::Item>,
}

impl<S: tokio_stream::Stream> Until<S> {
    /// `stream` until the server of `stopping` stops, then `last` (if any), then the end.
    pub fn new(stream: S, mut stopping: Stopping, last: Option<S::Item>) -> Self {
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        Until {
            stream,
            stop: Some(Box::pin(stop)),
            last,
        }
    }
}

impl<S> tokio_stream::Stream for Until<S>
where
    S: tokio_stream::Stream + Unpin,
    S::Item: Unpin,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if let Some(stop) = &mut this.stop {
            if stop.as_mut().poll(cx).is_ready() {
                this.stop = None;
            }
        }
        if this.stop.is_none() {
            return Poll::Ready(this.last.take());
        }
        Pin::new(&mut this.stream).poll_next(cx)
    }
}
