//! The OTLP exporter's settings: the flags and the OpenTelemetry environment resolved into a
//! typed [`ExportConfig`], and the [`opentelemetry_otlp::SpanExporter`] built from it.

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter;

use crate::settings::OtlpProtocol;
use crate::telemetry::EXPORT_TIMEOUT;

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
}

impl ExportConfig {
    /// From the flags, else the OpenTelemetry environment variables; `None` without an endpoint.
    pub fn resolve(
        endpoint: Option<&str>,
        protocol: Option<OtlpProtocol>,
    ) -> Result<Option<Self>, String> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = endpoint
            .map(str::to_string)
            .filter(|e| !e.trim().is_empty())
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let protocol = match protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
                None | Some("grpc") => OtlpProtocol::Grpc,
                Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not `grpc` or `http/protobuf`"
                    ));
                }
            },
        };
        Ok(Some(ExportConfig {
            endpoint,
            protocol,
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| "mcp-authz".into()),
        }))
    }

    /// The URL the exporter posts to: for http/protobuf, `/v1/traces` is appended to a base URL.
    pub fn url(&self) -> String {
        let base = self.endpoint.trim();
        match self.protocol {
            OtlpProtocol::Grpc => base.to_string(),
            OtlpProtocol::HttpProtobuf if base.ends_with("/v1/traces") => base.to_string(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    }
}

pub fn build_exporter(config: &ExportConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match config.protocol {
        OtlpProtocol::Grpc => builder
            .with_tonic()
            .with_endpoint(config.url())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.url())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build(),
    );
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_urls() {
        let config = |endpoint: &str, protocol| ExportConfig {
            endpoint: endpoint.into(),
            protocol,
            service_name: "mcp-authz".into(),
        };
        assert_eq!(
            config("http://j:4317", OtlpProtocol::Grpc).url(),
            "http://j:4317"
        );
        assert_eq!(
            config("http://j:4318/", OtlpProtocol::HttpProtobuf).url(),
            "http://j:4318/v1/traces"
        );
        assert_eq!(
            config("http://j:4318/v1/traces", OtlpProtocol::HttpProtobuf).url(),
            "http://j:4318/v1/traces"
        );
    }
}
