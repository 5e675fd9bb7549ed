//! The messages between the [`super::Aggregates`] handle, a partition's host and the command
//! tasks it runs, in one module that all of them use (so that none imports another for them).

use std::fmt;

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

/// How a command task ended.
#[derive(Debug)]
pub(crate) enum TaskEnd {
    /// It answered its caller; the aggregate's entry (or its absence) is up to date.
    Done,
    /// Domain code panicked; the message is the panic's.
    Panicked(String),
}

/// To the host of one partition of one aggregate kind.
pub(crate) enum HostMsg<A: Aggregate> {
    /// A request for aggregate `id`.
    Request { id: String, request: Request<A> },
    /// From the command task of aggregate `id`: it has finished.
    Finished { id: Box<str>, end: TaskEnd },
    /// Timer: passivate the aggregates idle for the idle timeout.
    Sweep,
}

impl<A: Aggregate> ractor::Message for HostMsg<A> {}

impl<A: Aggregate> fmt::Debug for HostMsg<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMsg::Request { id, request } => write!(f, "Request({id}, {request:?})"),
            HostMsg::Finished { id, end } => write!(f, "Finished({id}, {end:?})"),
            HostMsg::Sweep => f.write_str("Sweep"),
        }
    }
}
