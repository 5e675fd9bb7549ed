//! The messages between the [`super::Aggregates`] handle, a kind's host and its entities, in
//! one module that both actors use (so that neither imports the other).

use std::fmt;

use ractor::{ActorId, RpcReplyPort};

use super::host::HostStats;
use super::{Aggregate, CommandEnvelope, CommandError, CommandOutcome, Versioned};

pub(crate) type CommandReply<A> = Result<CommandOutcome<A>, CommandError<<A as Aggregate>::Error>>;
pub(crate) type StateReply<A> =
    Result<Versioned<<A as Aggregate>::State>, CommandError<<A as Aggregate>::Error>>;

/// To the host of one aggregate kind.
pub(crate) enum HostMsg<A: Aggregate> {
    Execute {
        id: String,
        envelope: CommandEnvelope<A::Command>,
        reply: RpcReplyPort<CommandReply<A>>,
    },
    Get {
        id: String,
        reply: RpcReplyPort<StateReply<A>>,
    },
    /// From an entity that has been idle for its timeout.
    Idle {
        id: String,
        actor: ActorId,
    },
    Stats(RpcReplyPort<HostStats>),
}

impl<A: Aggregate> ractor::Message for HostMsg<A> {}

impl<A: Aggregate> fmt::Debug for HostMsg<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMsg::Execute { id, envelope, .. } => {
                write!(f, "Execute({id}, {:?})", envelope.command)
            }
            HostMsg::Get { id, .. } => write!(f, "Get({id})"),
            HostMsg::Idle { id, .. } => write!(f, "Idle({id})"),
            HostMsg::Stats(_) => f.write_str("Stats"),
        }
    }
}

/// To one entity, from its host.
pub(crate) enum EntityMsg<A: Aggregate> {
    Execute {
        envelope: CommandEnvelope<A::Command>,
        reply: RpcReplyPort<CommandReply<A>>,
    },
    Get {
        reply: RpcReplyPort<StateReply<A>>,
    },
    /// Timer tick: passivate if nothing happened for the idle timeout.
    CheckIdle,
    /// From the host, always the last message it sends: stop now.
    Passivate,
}

impl<A: Aggregate> ractor::Message for EntityMsg<A> {}

impl<A: Aggregate> fmt::Debug for EntityMsg<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityMsg::Execute { envelope, .. } => write!(f, "Execute({:?})", envelope.command),
            EntityMsg::Get { .. } => f.write_str("Get"),
            EntityMsg::CheckIdle => f.write_str("CheckIdle"),
            EntityMsg::Passivate => f.write_str("Passivate"),
        }
    }
}

impl<A: Aggregate> EntityMsg<A> {
    /// Answers the caller waiting on this message (if any) with `error`.
    pub(crate) fn fail(self, error: CommandError<A::Error>) {
        match self {
            EntityMsg::Execute { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            EntityMsg::Get { reply } => {
                let _ = reply.send(Err(error));
            }
            EntityMsg::CheckIdle | EntityMsg::Passivate => {}
        }
    }
}
