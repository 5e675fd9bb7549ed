//! What the [`super::Aggregates`] handle, a partition's host and the command tasks it runs
//! pass each other (messages, and the queue of an aggregate's waiting requests), in one module
//! that all of them use (so that none imports another for them).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use ractor::RpcReplyPort;

use super::{Aggregate, CommandEnvelope, CommandError, CommandOutcome, Versioned};

pub(crate) type CommandReply<A> = Result<CommandOutcome<A>, CommandError<<A as Aggregate>::Error>>;
pub(crate) type StateReply<A> =
    Result<Versioned<<A as Aggregate>::State>, CommandError<<A as Aggregate>::Error>>;

/// What a caller asks of one aggregate.
pub(crate) enum Request<A: Aggregate> {
    Execute {
        envelope: CommandEnvelope<A::Command>,
        reply: RpcReplyPort<CommandReply<A>>,
    },
    Get {
        reply: RpcReplyPort<StateReply<A>>,
    },
}

impl<A: Aggregate> Request<A> {
    /// Answers the caller waiting on this request with `error`.
    pub(crate) fn fail(self, error: CommandError<A::Error>) {
        match self {
            Request::Execute { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Request::Get { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl<A: Aggregate> fmt::Debug for Request<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Execute { envelope, .. } => write!(f, "Execute({:?})", envelope.command),
            Request::Get { .. } => f.write_str("Get"),
        }
    }
}

/// The requests waiting for an aggregate whose task is running, shared by its host (which adds
/// to it) and the task (which takes from it until it is empty, then closes it). So a busy
/// aggregate's requests go from one to the next without a round trip through the host.
pub(crate) struct RequestQueue<A: Aggregate> {
    state: Mutex<Waiting<A>>,
}

struct Waiting<A: Aggregate> {
    requests: VecDeque<Request<A>>,
    /// Set by the task as it takes nothing more: it no longer touches the aggregate.
    closed: bool,
}

impl<A: Aggregate> RequestQueue<A> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(Waiting {
                requests: VecDeque::new(),
                closed: false,
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting<A>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` behind the running one; gives it back if the task has closed the
    /// queue (then a new task must serve it).
    pub(crate) fn push(&self, request: Request<A>) -> Result<(), Request<A>> {
        let mut waiting = self.waiting();
        if waiting.closed {
            return Err(request);
        }
        waiting.requests.push_back(request);
        Ok(())
    }

    /// The next request; `None` closes the queue, for good.
    pub(crate) fn next(&self) -> Option<Request<A>> {
        let mut waiting = self.waiting();
        let next = waiting.requests.pop_front();
        waiting.closed |= next.is_none();
        next
    }

    /// Closes the queue and takes what waits in it (the host is failing).
    pub(crate) fn drain(&self) -> Vec<Request<A>> {
        let mut waiting = self.waiting();
        waiting.closed = true;
        waiting.requests.drain(..).collect()
    }
}

/// How a command task ended.
#[derive(Debug)]
pub(crate) enum TaskEnd {
    /// It served every request its queue held and closed the queue; the aggregate's entry (or
    /// its absence) is up to date.
    Done,
    /// Domain code panicked; the message is the panic's.
    Panicked(String),
}

/// To the host of one partition of one aggregate kind.
pub(crate) enum HostMsg<A: Aggregate> {
    /// A request for aggregate `id`.
    Request { id: String, request: Request<A> },
    /// From the command task of aggregate `id` (the host's `ticket`-th): it has finished.
    Finished {
        id: Box<str>,
        ticket: u64,
        end: TaskEnd,
    },
    /// Timer: passivate the aggregates idle for the idle timeout.
    Sweep,
}

impl<A: Aggregate> ractor::Message for HostMsg<A> {}

impl<A: Aggregate> fmt::Debug for HostMsg<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMsg::Request { id, request } => write!(f, "Request({id}, {request:?})"),
            HostMsg::Finished { id, ticket, end } => {
                write!(f, "Finished({id}, #{ticket}, {end:?})")
            }
            HostMsg::Sweep => f.write_str("Sweep"),
        }
    }
}
