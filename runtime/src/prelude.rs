//! What a domain service's author needs, in one import: `use playhouse_runtime::prelude::*;`.

pub use crate::aggregate::{
    Access, Aggregate, Aggregates, CommandEnvelope, CommandError, CommandOutcome, DomainError,
    Fenced, Refusal, Versioned,
};
pub use crate::bus::{Bus, Delivered, Projection, ProjectionError, Tables};
pub use crate::edge::kit::problems::{
    CommandProblems, CreateProblems, QueryProblems, ReadProblems,
};
pub use crate::edge::kit::{
    ApiQuery, CommandAnswer, CommandContext, IdempotencyKeyHeader, Listed, Page, ReadModels,
    Routed, command_problem, history_routes, not_found, read_problem, saga_problem, visible,
};
pub use crate::edge::{ApiJson, PathId, Principal, Problem, ProblemCode, Reader, Routes, Writer};
pub use crate::saga::{
    Fence, SagaKind, SagaState, SagaStatus, Sagas, Step, StepContext, StepKind, StepOutcome,
};
pub use crate::service::{Service, ServiceContext, ServiceDef};
