//! The command table: one entry per API command with its parameters, access and
//! handler. The dispatcher and `listApis` both read this table, so what is
//! documented is exactly what is served.

use super::params::Params;
use super::render::Reply;
use crate::error::ApiError;
use crate::service::{Caller, Service};
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct Ctx {
    pub svc: Arc<Service>,
    pub caller: Caller,
    pub p: Params,
    /// The request came as a POST (some limits are larger then).
    pub post: bool,
}

pub type Handler = fn(Ctx) -> BoxFuture<'static, Result<Reply, ApiError>>;

/// Which role types may call a command at all; dynamic role rules narrow it further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    RootAdmin,
    Admins,
    All,
}

#[derive(Clone, Copy)]
pub struct P {
    pub name: &'static str,
    pub ty: &'static str,
    pub required: bool,
    pub description: &'static str,
    /// Longest accepted value of a string parameter, in characters; `listApis`
    /// advertises it and the dispatcher enforces it.
    pub length: u32,
}

/// CloudStack's default `length` of an API parameter.
pub const DEFAULT_LENGTH: u32 = 255;

pub const fn req(name: &'static str, ty: &'static str, description: &'static str) -> P {
    P {
        name,
        ty,
        required: true,
        description,
        length: DEFAULT_LENGTH,
    }
}
pub const fn opt(name: &'static str, ty: &'static str, description: &'static str) -> P {
    P {
        name,
        ty,
        required: false,
        description,
        length: DEFAULT_LENGTH,
    }
}

impl P {
    /// The same parameter with a longer (or shorter) limit than the default.
    pub const fn len(mut self, length: u32) -> P {
        self.length = length;
        self
    }
}

pub struct Field {
    pub name: &'static str,
    pub ty: &'static str,
    pub description: &'static str,
}

pub const fn f(name: &'static str, ty: &'static str, description: &'static str) -> Field {
    Field {
        name,
        ty,
        description,
    }
}

pub struct Command {
    pub name: &'static str,
    pub description: &'static str,
    pub is_async: bool,
    pub access: Access,
    pub params: &'static [P],
    pub response: &'static [Field],
    /// For the few commands whose response key does not follow `<name>response`.
    pub response_key: Option<&'static str>,
    pub handler: Handler,
}

impl Command {
    pub fn key(&self) -> String {
        self.response_key
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}response", self.name.to_lowercase()))
    }
}

/// Parameters every list command takes.
pub const PAGING: [P; 3] = [
    opt("page", "integer", "page number, from 1"),
    opt(
        "pagesize",
        "integer",
        "items per page, at most default.page.size; -1 for all",
    ),
    opt("keyword", "string", "search text"),
];

#[macro_export]
macro_rules! handler {
    ($f:path) => {
        |ctx| Box::pin($f(ctx))
    };
}

/// A command table entry in one line.
#[macro_export]
macro_rules! cmd {
    ($name:literal, $desc:literal, $async:expr, $access:ident, $params:expr, $fields:expr, $h:path) => {
        $crate::api::registry::Command {
            name: $name,
            description: $desc,
            is_async: $async,
            access: $crate::api::registry::Access::$access,
            params: {
                const PARAMS: &[$crate::api::registry::P] = $params;
                PARAMS
            },
            response: {
                const FIELDS: &[$crate::api::registry::Field] = $fields;
                FIELDS
            },
            response_key: None,
            handler: |ctx| Box::pin($h(ctx)),
        }
    };
}
