//! The generated ext_authz v3 types (from `proto/`), nested as their packages so the generated
//! cross-package paths resolve.

#![allow(clippy::all, missing_docs)]

pub mod envoy {
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use envoy::config::core::v3 as core;
pub use envoy::service::auth::v3 as auth;
pub use envoy::r#type::v3 as http;
pub use google::rpc;
