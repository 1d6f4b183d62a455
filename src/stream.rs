//! The one stream model. Watch updates, lease states — and next discovery changes, election
//! observation and async completions — all travel through a bounded queue from one producer
//! side (`Feed`, held by a backend) to one consumer side (`Stream`), which either pulls
//! (`recv`, `next`, a readable fd) or has a handler run on etcdc's event thread.
//!
//! The queue never grows past its capacity: `Feed::try_send` hands a refused item back, and
//! the room callback (`Feed::on_room`) fires once the consumer has drained it to half, so a
//! producer that can replay (a watch resumes from its next revision) stops and later resumes
//! instead of buffering. Only a stream's last item (`Feed::finish`) and items a producer
//! sends with `send_anyway` (bounded by the producer, e.g. one LOST per lease) pass the cap.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::events;

/// The queue length of a stream unless its starter asks otherwise.
pub(crate) const DEFAULT_CAPACITY: usize = 256;

/// What a push handler receives: an item, or, once, why the stream failed.
pub enum Delivery<T> {
    Item(T),
    Failed(Error),
}

/// A handler run on the event thread, one delivery at a time. Dropping it is the consumer's
/// "drop": it happens exactly once, after the last call.
pub type Handler<T> = Box<dyn FnMut(Delivery<T>) + Send>;

/// Why `try_send` refused an item; the item comes back.
#[derive(Debug)]
pub enum SendError<T> {
    /// The queue is at capacity: the room callback fires when it has drained to half.
    Full(T),
    /// The consumer is gone: stop producing.
    Closed(T),
}

enum End {
    Open,
    Finished,
    Failed(Error),
}

struct State<T> {
    queue: VecDeque<T>,
    end: End,
    /// The consumer closed the stream (freed it).
    closed: bool,
    /// A producer was refused: call the room callback when the queue drains to half.
    want_room: bool,
    producers: usize,
    /// Pull form: the fd has a byte waiting.
    signaled: bool,
    /// Pull form: threads blocked in `next` (none: a new item wakes nobody through the
    /// condition variable, and costs no system call).
    sleepers: usize,
    /// Push form.
    handler: Option<Handler<T>>,
    push: bool,
    scheduled: bool,
    in_call: bool,
    failure_delivered: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes pull waiters and a `close` waiting for a running handler.
    cv: Condvar,
    /// Wakes an async `recv`.
    ready: tokio::sync::Notify,
    capacity: usize,
    room: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// The pull form's descriptor, made on first use: (read end handed out, write end).
    fd: OnceLock<(UnixStream, UnixStream)>,
    /// Pull form: called instead of the other wake-ups when there is something to take
    /// (`on_ready`).
    ready_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The producer side. Clones feed the same stream; when the last one is dropped without
/// `finish`, the stream fails ("the stream's source went away").
pub struct Feed<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

/// The consumer side. Dropping it closes the stream.
pub struct Stream<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

fn new_shared<T>(capacity: usize, handler: Option<Handler<T>>) -> Arc<Shared<T>> {
    Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            end: End::Open,
            closed: false,
            want_room: false,
            producers: 1,
            signaled: false,
            sleepers: 0,
            push: handler.is_some(),
            handler,
            scheduled: false,
            in_call: false,
            failure_delivered: false,
        }),
        cv: Condvar::new(),
        ready: tokio::sync::Notify::new(),
        capacity: capacity.max(1),
        room: Mutex::new(None),
        fd: OnceLock::new(),
        ready_hook: OnceLock::new(),
    })
}

/// A stream the consumer pulls from (`recv`, `next`, `fd`).
pub fn channel<T: Send + 'static>(capacity: usize) -> (Feed<T>, Stream<T>) {
    let shared = new_shared(capacity, None);
    (
        Feed {
            shared: shared.clone(),
        },
        Stream { shared },
    )
}

/// A stream whose items go to `handler` on etcdc's event thread. Fails (and drops the
/// handler) when the event thread cannot be started, so no item is ever dropped unseen.
pub fn with_handler<T: Send + 'static>(
    capacity: usize,
    handler: Handler<T>,
) -> Result<(Feed<T>, Stream<T>)> {
    events::start()?;
    let shared = new_shared(capacity, Some(handler));
    Ok((
        Feed {
            shared: shared.clone(),
        },
        Stream { shared },
    ))
}

impl<T: Send + 'static> Shared<T> {
    /// Makes the consumer notice new state: pull waiters, the fd, or the event thread.
    fn wake(self: &Arc<Self>, st: &mut State<T>) {
        if st.push {
            if !st.scheduled && !st.in_call && !st.closed {
                st.scheduled = true;
                events::post(self.clone());
            }
            return;
        }
        if let Some(hook) = self.ready_hook.get() {
            hook();
            return;
        }
        if !st.signaled {
            if let Some((_, w)) = self.fd.get() {
                let _ = (&*w).write(&[1]);
                st.signaled = true;
            }
        }
        if st.sleepers > 0 {
            self.cv.notify_all();
        }
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Called after taking an item off the queue: the room callback, when one is owed.
    fn owed_room(&self, st: &mut State<T>) -> bool {
        if st.want_room && st.queue.len() <= self.capacity / 2 {
            st.want_room = false;
            return true;
        }
        false
    }

    fn call_room(&self) {
        if let Some(f) = lock(&self.room).as_ref() {
            f();
        }
    }

    fn pending_failure(st: &State<T>) -> Option<Error> {
        match &st.end {
            End::Failed(e) if !st.failure_delivered => Some(e.clone()),
            _ => None,
        }
    }

    fn end(self: &Arc<Self>, end: End) {
        let mut st = lock(&self.state);
        if matches!(st.end, End::Open) {
            st.end = end;
            self.wake(&mut st);
        }
    }
}

impl<T: Send + 'static> Feed<T> {
    /// Queues `item` unless the queue is full or the consumer is gone.
    pub fn try_send(&self, item: T) -> std::result::Result<(), SendError<T>> {
        let mut st = lock(&self.shared.state);
        if st.closed || !matches!(st.end, End::Open) {
            return Err(SendError::Closed(item));
        }
        if st.queue.len() >= self.shared.capacity {
            st.want_room = true;
            return Err(SendError::Full(item));
        }
        st.queue.push_back(item);
        self.shared.wake(&mut st);
        Ok(())
    }

    /// Queues `item` past the capacity: for items a producer must not lose and bounds itself.
    pub fn send_anyway(&self, item: T) -> bool {
        let mut st = lock(&self.shared.state);
        if st.closed || !matches!(st.end, End::Open) {
            return false;
        }
        st.queue.push_back(item);
        self.shared.wake(&mut st);
        true
    }

    /// Ends the stream cleanly, with `last` as its final item (queued past the capacity).
    pub fn finish(&self, last: Option<T>) {
        if let Some(last) = last {
            self.send_anyway(last);
        }
        self.shared.end(End::Finished);
    }

    /// Ends the stream with an error the consumer receives after the queued items.
    pub fn fail(&self, error: Error) {
        self.shared.end(End::Failed(error));
    }

    /// Sets what to call when a refused producer may send again.
    pub fn on_room(&self, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.shared.room) = Some(Box::new(f));
    }

    /// True once the consumer has closed the stream.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }
}

impl<T: Send + 'static> Clone for Feed<T> {
    fn clone(&self) -> Self {
        lock(&self.shared.state).producers += 1;
        Feed {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static> Drop for Feed<T> {
    fn drop(&mut self) {
        let last = {
            let mut st = lock(&self.shared.state);
            st.producers -= 1;
            st.producers == 0
        };
        if last {
            // The room callback may hold the producer's own channel: let it go with it.
            lock(&self.shared.room).take();
            self.shared.end(End::Failed(Error::new(
                ErrorKind::Closed,
                "the stream's source went away (its client, or the driven queue it ran on, was freed)",
            )));
        }
    }
}

fn freed() -> Error {
    Error::new(ErrorKind::Closed, "the stream was freed")
}

impl<T: Send + 'static> Stream<T> {
    /// Takes the next item, or the end. `Ok(None)`: nothing yet.
    fn take(&self) -> Result<Option<T>> {
        let mut st = lock(&self.shared.state);
        if st.closed {
            return Err(freed());
        }
        if let Some(item) = st.queue.pop_front() {
            let room = self.shared.owed_room(&mut st);
            if st.queue.is_empty() && matches!(st.end, End::Open) && st.signaled {
                if let Some((r, _)) = self.shared.fd.get() {
                    let mut buf = [0u8; 64];
                    while matches!((&*r).read(&mut buf), Ok(n) if n > 0) {}
                }
                st.signaled = false;
            }
            drop(st);
            if room {
                self.shared.call_room();
            }
            return Ok(Some(item));
        }
        match &st.end {
            End::Open => Ok(None),
            End::Finished => Err(Error::new(
                ErrorKind::Closed,
                "the stream has ended; nothing more will arrive",
            )),
            End::Failed(e) => Err(e.clone()),
        }
    }

    /// `InvalidArgument` for a stream that delivers to a callback: nothing to pull.
    pub fn ensure_pull(&self) -> Result<()> {
        if lock(&self.shared.state).push {
            return Err(Error::invalid(
                "this stream delivers to its callback; it has nothing to pull",
            ));
        }
        Ok(())
    }

    /// The next item, waiting up to `timeout` (None: no limit). At the end: `Closed` after a
    /// clean end, or the error the stream failed with.
    pub fn next(&self, timeout: Option<Duration>) -> Result<T> {
        self.ensure_pull()?;
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(item) = self.take()? {
                return Ok(item);
            }
            let mut st = lock(&self.shared.state);
            if st.closed || !st.queue.is_empty() || !matches!(st.end, End::Open) {
                continue;
            }
            let left = until.map(|until| until.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "nothing arrived within {} ms",
                        timeout.unwrap_or_default().as_millis()
                    ),
                ));
            }
            st.sleepers += 1;
            let mut st = match left {
                None => self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(left) => {
                    let woken = self.shared.cv.wait_timeout(st, left);
                    woken.unwrap_or_else(|p| p.into_inner()).0
                }
            };
            st.sleepers -= 1;
        }
    }

    /// `next` for async code, never blocking a runtime thread: the next item, or at the end
    /// `Closed` after a clean end or the error the stream failed with. Any number of tasks
    /// may wait; each item goes to one of them.
    pub async fn next_async(&self) -> Result<T> {
        self.ensure_pull()?;
        loop {
            let ready = self.shared.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(item) = self.take()? {
                return Ok(item);
            }
            ready.await;
        }
    }

    /// Makes `hook` the consumer's only wake-up (pull form): it is called, under the stream's
    /// lock, whenever an item or the end arrives, and the consumer takes with `try_next`.
    /// Lets one task serve many streams without a task per stream. Set once, before the
    /// first item; `hook` must not touch this stream.
    pub fn on_ready(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.shared.ready_hook.set(Box::new(hook));
    }

    /// The next item if one is waiting (`Ok(None)`: nothing yet), without waiting. At the
    /// end: `Closed` after a clean end, or the error the stream failed with.
    pub fn try_next(&self) -> Result<Option<T>> {
        self.take()
    }

    /// Puts an item taken by `next_async` back at the head of the queue, for a taker that
    /// could not hand it on (its operation was canceled meanwhile): nothing is lost.
    pub fn put_back(&self, item: T) {
        let mut st = lock(&self.shared.state);
        if st.closed {
            return;
        }
        st.queue.push_front(item);
        self.shared.wake(&mut st);
    }

    /// The next item for async code; `None` once the stream has ended (see `error`).
    pub async fn recv(&self) -> Option<T> {
        self.next_async().await.ok()
    }

    /// True while a producer was refused for want of room and waits for the consumer to
    /// drain (a watch in that state is paused and will resume from history).
    pub fn is_behind(&self) -> bool {
        lock(&self.shared.state).want_room
    }

    /// Why the stream failed, once it has (None while open or after a clean end).
    pub fn error(&self) -> Option<Error> {
        match &lock(&self.shared.state).end {
            End::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// A descriptor that is readable while an item or the end is waiting (pull form).
    pub fn fd(&self) -> Result<RawFd> {
        let mut st = lock(&self.shared.state);
        if st.push {
            return Err(Error::invalid(
                "this stream delivers to its callback; it has no fd",
            ));
        }
        let (r, w) = match self.shared.fd.get() {
            Some(pair) => pair,
            None => {
                let pair = UnixStream::pair()
                    .and_then(|(r, w)| {
                        r.set_nonblocking(true)?;
                        w.set_nonblocking(true)?;
                        Ok((r, w))
                    })
                    .map_err(|e| {
                        Error::new(ErrorKind::Internal, format!("cannot make a stream fd: {e}"))
                    })?;
                let _ = self.shared.fd.set(pair);
                self.shared
                    .fd
                    .get()
                    .ok_or_else(|| Error::new(ErrorKind::Internal, "cannot make a stream fd"))?
            }
        };
        let waiting = !st.queue.is_empty() || !matches!(st.end, End::Open) || st.closed;
        if waiting && !st.signaled {
            let _ = (&*w).write(&[1]);
            st.signaled = true;
        }
        Ok(r.as_raw_fd())
    }

    /// Closes the stream: pull waiters get `Closed`, the producer is refused from now on.
    /// In push form it waits for a running handler, then drops the handler — except when
    /// called from inside that handler, where it returns at once and the event thread drops
    /// the handler when the call returns.
    pub fn close(&self) {
        let handler = {
            let mut st = lock(&self.shared.state);
            if !st.closed {
                st.closed = true;
                st.queue.clear();
                if !st.push {
                    self.shared.cv.notify_all();
                    self.shared.ready.notify_waiters();
                    self.shared.ready.notify_one();
                }
            }
            if st.in_call && events::on_event_thread() {
                return;
            }
            while st.in_call {
                st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.handler.take()
        };
        lock(&self.shared.room).take();
        drop(handler);
    }
}

impl<T: Send + 'static> Drop for Stream<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T: Send + 'static> events::Job for Shared<T> {
    /// One delivery to the handler; reschedules itself while more is waiting, so streams
    /// take turns on the one event thread.
    fn run(self: Arc<Self>) {
        let (delivery, mut handler, room) = {
            let mut st = lock(&self.state);
            let delivery = if st.closed {
                None
            } else if let Some(item) = st.queue.pop_front() {
                Some(Delivery::Item(item))
            } else if let Some(e) = Self::pending_failure(&st) {
                st.failure_delivered = true;
                Some(Delivery::Failed(e))
            } else {
                None
            };
            let Some(delivery) = delivery else {
                st.scheduled = false;
                return;
            };
            let room = self.owed_room(&mut st);
            st.in_call = true;
            (delivery, st.handler.take(), room)
        };
        if room {
            self.call_room();
        }
        if let Some(h) = handler.as_mut() {
            h(delivery);
        }
        let mut st = lock(&self.state);
        if st.closed {
            // Closed during the call (possibly from inside it): drop the handler here, after
            // its last call, and only then let a waiting `close` return.
            drop(st);
            drop(handler);
            st = lock(&self.state);
            st.in_call = false;
            st.scheduled = false;
            self.cv.notify_all();
            return;
        }
        st.handler = handler;
        st.in_call = false;
        let more = !st.queue.is_empty() || Self::pending_failure(&st).is_some();
        st.scheduled = more;
        drop(st);
        self.cv.notify_all();
        if more {
            events::post(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn full_queue_refuses_then_calls_room_at_half() {
        let (feed, stream) = channel::<u32>(4);
        let rooms = Arc::new(AtomicUsize::new(0));
        let r = rooms.clone();
        feed.on_room(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        for i in 0..4 {
            feed.try_send(i).unwrap();
        }
        assert!(matches!(feed.try_send(4), Err(SendError::Full(4))));
        assert_eq!(stream.next(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(rooms.load(Ordering::SeqCst), 0, "3 left: not yet at half");
        assert_eq!(stream.next(Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(rooms.load(Ordering::SeqCst), 1, "2 left: half");
        assert_eq!(stream.next(Some(Duration::ZERO)).unwrap(), 2);
        assert_eq!(
            rooms.load(Ordering::SeqCst),
            1,
            "room is owed once per refusal"
        );
        feed.finish(Some(9));
        assert_eq!(stream.next(None).unwrap(), 3);
        assert_eq!(stream.next(None).unwrap(), 9);
        assert_eq!(stream.next(None).unwrap_err().kind, ErrorKind::Closed);
    }

    #[test]
    fn close_wakes_a_waiting_puller() {
        let (_feed, stream) = channel::<u32>(4);
        let stream = Arc::new(stream);
        let s = stream.clone();
        let waiter = std::thread::spawn(move || s.next(None));
        std::thread::sleep(Duration::from_millis(50));
        stream.close();
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Closed);
        assert_eq!(err.message, "the stream was freed");
    }

    #[test]
    fn a_push_handler_hears_an_abnormal_end_then_is_dropped_once() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        struct OnDrop(std::sync::mpsc::Sender<String>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                let _ = self.0.send("drop".into());
            }
        }
        let guard = OnDrop(tx.clone());
        let handler: Handler<u32> = Box::new(move |d| {
            let _ = &guard;
            let _ = tx.send(match d {
                Delivery::Item(i) => format!("item {i}"),
                Delivery::Failed(e) => format!("failed {}", e.message),
            });
        });
        let (feed, stream) = with_handler(4, handler).unwrap();
        feed.try_send(1).unwrap();
        drop(feed);
        let t = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(t).unwrap(), "item 1");
        assert!(rx
            .recv_timeout(t)
            .unwrap()
            .starts_with("failed the stream's source went away"));
        stream.close();
        assert_eq!(rx.recv_timeout(t).unwrap(), "drop");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
