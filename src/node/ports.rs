//! The ports an algorithm image declares: `EXPOSE <port>[/tcp|/udp]` (Docker's `ExposedPorts`)
//! named by `LABEL p<port>="<label>"`. No EXPOSE means 8888/tcp, as in vantage6. A declaration
//! that is not a port is skipped with a warning that says why; it never stops the run.

use std::collections::HashMap;

use netstack::Protocol;

use crate::api::ContainerPort;

/// A port an algorithm listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlgorithmPort {
    pub port: ContainerPort,
    pub protocol: Protocol,
    pub label: Option<String>,
}

/// vantage6's default when an image exposes nothing.
pub const DEFAULT_PORT: ContainerPort = ContainerPort(8888);

/// `num` as a port (1-65535).
fn port_number(num: &str) -> Option<ContainerPort> {
    num.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .map(ContainerPort)
}

/// Reads the exposed ports (`"8888/tcp"`, `"9000/udp"`, `"53"`) and `p<port>` labels of an
/// image. Returns the ports and a warning for each declaration that was skipped.
pub fn algorithm_ports<'a>(
    exposed: impl IntoIterator<Item = &'a str>,
    labels: &HashMap<String, String>,
) -> (Vec<AlgorithmPort>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut ports: Vec<AlgorithmPort> = Vec::new();
    let mut any = false;
    for spec in exposed {
        any = true;
        let (num, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                warnings.push(format!(
                    "EXPOSE {spec}: protocol {other:?} is not tcp or udp; skipped"
                ));
                continue;
            }
        };
        let Some(port) = port_number(num) else {
            warnings.push(format!(
                "EXPOSE {spec}: {num:?} is not a port (1-65535); skipped"
            ));
            continue;
        };
        if ports
            .iter()
            .any(|p| p.port == port && p.protocol == protocol)
        {
            continue;
        }
        ports.push(AlgorithmPort {
            port,
            protocol,
            label: None,
        });
    }
    if !any {
        ports.push(AlgorithmPort {
            port: DEFAULT_PORT,
            protocol: Protocol::Tcp,
            label: None,
        });
    }
    for (key, value) in labels {
        let Some(num) = key.strip_prefix('p') else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue; // another label that happens to start with p
        }
        let Some(port) = port_number(num) else {
            warnings.push(format!(
                "LABEL {key}={value:?}: {num} is not a port (1-65535); ignored"
            ));
            continue;
        };
        let mut named = false;
        for p in ports.iter_mut().filter(|p| p.port == port) {
            p.label = Some(value.clone());
            named = true;
        }
        if !named {
            warnings.push(format!(
                "LABEL {key}={value:?}: port {port} is not exposed; ignored"
            ));
        }
    }
    ports.sort_by_key(|p| (p.port, p.protocol));
    (ports, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exposed_ports_and_labels_as_vantage6_reads_them() {
        let (ports, warnings) = algorithm_ports(
            ["8888/tcp", "9000/udp", "7000"],
            &labels(&[("p8888", "echo"), ("p9000", "data"), ("purpose", "x")]),
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            ports,
            vec![
                AlgorithmPort {
                    port: ContainerPort(7000),
                    protocol: Protocol::Tcp,
                    label: None
                },
                AlgorithmPort {
                    port: ContainerPort(8888),
                    protocol: Protocol::Tcp,
                    label: Some("echo".into())
                },
                AlgorithmPort {
                    port: ContainerPort(9000),
                    protocol: Protocol::Udp,
                    label: Some("data".into())
                },
            ]
        );
    }

    #[test]
    fn nothing_exposed_means_8888() {
        let (ports, _) = algorithm_ports([], &labels(&[("p8888", "echo")]));
        assert_eq!(
            ports,
            vec![AlgorithmPort {
                port: ContainerPort(8888),
                protocol: Protocol::Tcp,
                label: Some("echo".into())
            }]
        );
    }

    #[test]
    fn bad_declarations_are_skipped_with_a_reason() {
        let (ports, warnings) = algorithm_ports(
            ["http/tcp", "0/tcp", "70000/udp", "53/sctp", "8888/tcp"],
            &labels(&[("p99999", "x"), ("p1234", "unexposed")]),
        );
        assert_eq!(ports.len(), 1);
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("\"http\" is not a port")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("\"sctp\" is not tcp or udp")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("port 1234 is not exposed")));
    }

    proptest::proptest! {
        /// Any EXPOSE entries and labels an image may carry: ports or warnings, never a panic,
        /// and every port returned was declared (or is the default).
        #[test]
        fn any_image_metadata_is_handled(
            exposed in proptest::collection::vec("\\PC{0,12}", 0..6),
            labels in proptest::collection::hash_map("p?[0-9a-z]{0,6}", "\\PC{0,8}", 0..6),
        ) {
            let (ports, _) = algorithm_ports(exposed.iter().map(String::as_str), &labels);
            for p in ports {
                let declared = exposed.iter().any(|e| e.split('/').next() == Some(&p.port.to_string()));
                proptest::prop_assert!(declared || (exposed.is_empty() && p.port == DEFAULT_PORT));
            }
        }
    }
}
