//! The gateway: the actor of a node that other nodes' calls reach over ractor_cluster. It sits
//! in the process group `playhouse.gateway.{node}`, which ractor_cluster mirrors to every
//! linked node: that is how a peer finds it (once per link; the transport keeps what it
//! found). Each message is answered by the node's [`Inbound`] in a task of its own, so one
//! slow call never holds up the others.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::cluster::transport::{Channel, Inbound};

/// The process group of `node`'s gateway.
pub(super) fn group(node: &str) -> String {
    format!("playhouse.gateway.{node}")
}

/// The gateway's messages, one per channel, each carrying encoded bytes: ractor's own decoding
/// (which drops what it cannot decode) never fails on content.
#[derive(RactorClusterMessage)]
pub(super) enum GatewayMsg {
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    #[rpc]
    Heartbeat(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

struct Gateway;

/// Starts `node`'s gateway, answering with `inbound`, and puts it in its process group.
pub(super) async fn start(
    node: &str,
    inbound: Arc<dyn Inbound>,
) -> Result<ActorRef<GatewayMsg>, ractor::SpawnErr> {
    let (gateway, _) = Actor::spawn(None, Gateway, inbound).await?;
    ractor::pg::join(group(node), vec![gateway.get_cell()]);
    Ok(gateway)
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = Arc<dyn Inbound>;
    type Arguments = Arc<dyn Inbound>;

    async fn pre_start(
        &self,
        _: ActorRef<GatewayMsg>,
        inbound: Arc<dyn Inbound>,
    ) -> Result<Arc<dyn Inbound>, ActorProcessingErr> {
        Ok(inbound)
    }

    async fn handle(
        &self,
        _: ActorRef<GatewayMsg>,
        message: GatewayMsg,
        inbound: &mut Arc<dyn Inbound>,
    ) -> Result<(), ActorProcessingErr> {
        let (channel, bytes, reply) = match message {
            GatewayMsg::Call(bytes, reply) => (Channel::Call, bytes, reply),
            GatewayMsg::Heartbeat(bytes, reply) => (Channel::Heartbeat, bytes, reply),
        };
        let answer = inbound.receive(channel, bytes);
        tokio::spawn(async move {
            let _ = reply.send(answer.await);
        });
        Ok(())
    }
}
