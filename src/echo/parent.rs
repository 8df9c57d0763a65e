//! The parent: a child task on every organization, their addresses, and the probes of each
//! child (a line echoed, streams both ways, a datagram).

use super::stream::*;
use super::*;

pub(super) async fn addresses(
    env: &Env,
    label: &str,
) -> Result<Vec<crate::api::Address>, EchoError> {
    let a: Addresses = env
        .api
        .get(&format!(
            "/vpn/algorithm/addresses?only_children=1&label={label}"
        ))
        .await?;
    Ok(a.addresses)
}

pub(super) async fn run(
    env: &Env,
    organizations: Vec<OrganizationId>,
    timeout: Duration,
    stream: Duration,
) -> Result<Report, EchoError> {
    let me = identity(&env.token)?;
    let child_input = codec::encode_json(&Input::Child {
        window_secs: timeout.as_secs() + 120,
    });
    let task = NewTask {
        name: "echo-child".into(),
        description: "echo children".into(),
        image: me.image,
        // As vantage6's AlgorithmClient sends it: vantage6's server requires it.
        collaboration_id: Some(me.collaboration_id),
        organizations: organizations
            .iter()
            .map(|&id| TaskOrganization {
                id,
                input: child_input.clone(),
            })
            .collect(),
        parent_id: None,
        databases: None,
    };
    let task: Task = env.api.post("/task", &task).await?;
    eprintln!(
        "echo: child task {} on organizations {organizations:?}",
        task.id
    );

    let deadline = Instant::now() + timeout;
    let (tcp, udp) = loop {
        let tcp = addresses(env, TCP_LABEL).await?;
        let udp = addresses(env, UDP_LABEL).await?;
        let have = |a: &[crate::api::Address]| {
            organizations
                .iter()
                .all(|o| a.iter().any(|x| x.organization_id == *o && x.ip.is_some()))
        };
        if (have(&tcp) && have(&udp)) || Instant::now() >= deadline {
            break (tcp, udp);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut probes = Vec::new();
    for org in &organizations {
        let t = tcp.iter().find(|a| a.organization_id == *org);
        let u = udp.iter().find(|a| a.organization_id == *org);
        let mut p = Probe {
            ip: t.and_then(|a| a.ip.clone()),
            port: t.map(|a| a.port),
            udp_port: u.map(|a| a.port),
            ..Probe::new(*org)
        };
        let ip: Option<Ipv4Addr> = p.ip.as_deref().and_then(|i| i.parse().ok());
        match (ip, p.port) {
            (Some(ip), Some(port)) => {
                match probe_tcp(SocketAddrV4::new(ip, port.0), stream, &mut p).await {
                    Ok(()) => p.tcp_ok = true,
                    Err(e) => p.error = Some(format!("tcp: {e}")),
                }
            }
            _ => {
                p.error = Some(format!(
                    "no {TCP_LABEL} address within {}s",
                    timeout.as_secs()
                ))
            }
        }
        match (ip, p.udp_port) {
            (Some(ip), Some(port)) => match probe_udp(SocketAddrV4::new(ip, port.0)).await {
                Ok(()) => p.udp_ok = true,
                Err(e) => p.error = Some(format!("udp: {e}")),
            },
            _ => p.error = p.error.or(Some(format!("no {UDP_LABEL} address"))),
        }
        eprintln!("echo: organization {org}: {p:?}");
        probes.push(p);
    }
    // The children have served their purpose.
    for a in &tcp {
        if let Some(ip) = a.ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok()) {
            let _ = quit(SocketAddrV4::new(ip, a.port.0)).await;
        }
    }
    Ok(Report { probes })
}

pub(super) fn random_line() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) async fn connect(to: SocketAddrV4) -> Result<tokio::net::TcpStream, ProbeError> {
    // The child's port is registered before it starts listening: retry a refused connect.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to)).await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) if Instant::now() >= deadline => {
                return Err(ProbeError::TimedOut(format!("connect to {to}")))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One echoed line (round-trip time, ms), then `stream` of bytes to the child and `stream`
/// from it, each on a connection of its own (Mbit/s per direction); fills in `p` as it goes.
pub(super) async fn probe_tcp(
    to: SocketAddrV4,
    stream: Duration,
    p: &mut Probe,
) -> Result<(), ProbeError> {
    let s = connect(to).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let line = random_line();
    let mut back = String::new();
    let t = Instant::now();
    w.write_all(format!("{line}\n").as_bytes()).await?;
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut back))
        .await
        .map_err(|_| ProbeError::TimedOut("the echoed line".into()))??;
    p.rtt_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    if back.trim_end() != line {
        return Err(ProbeError::Differs {
            sent: line,
            got: back,
        });
    }
    if stream.is_zero() {
        return Ok(());
    }
    // Beyond the stream time, a slow tunnel gets this long to deliver what is in flight.
    let limit = stream + Duration::from_secs(30);
    p.up_mbit_s = Some(within(limit, "the stream to the child", upload(to, stream)).await?);
    p.down_mbit_s = Some(within(limit, "the stream from the child", download(to, stream)).await?);
    Ok(())
}

pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ProbeError::TimedOut(what.into()))?
}

pub(super) fn mbit_s(bytes: u64, t: Instant) -> f64 {
    bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
}

/// Streams to the child's `SINK` for `stream`; the rate is of the bytes the child counted, to
/// its answer.
pub(super) async fn upload(to: SocketAddrV4, stream: Duration) -> Result<f64, ProbeError> {
    let (r, mut w) = connect(to).await?.into_split();
    w.write_all(SINK).await?;
    let t = Instant::now();
    let sent = send_pattern(&mut w, stream).await?;
    w.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(r).read_line(&mut answer).await?;
    let counted: u64 = answer
        .trim()
        .parse()
        .map_err(|_| ProbeError::Corrupted(format!("the child answered {answer:?}")))?;
    if counted != sent {
        return Err(ProbeError::Corrupted(format!(
            "sent {sent} bytes, the child checked {counted}"
        )));
    }
    Ok(mbit_s(counted, t))
}

/// Has the child stream for `stream` and reads to the end.
pub(super) async fn download(to: SocketAddrV4, stream: Duration) -> Result<f64, ProbeError> {
    let (mut r, mut w) = connect(to).await?.into_split();
    let command = format!("{SOURCE}{}\n", stream.as_millis());
    w.write_all(command.as_bytes()).await?;
    let t = Instant::now();
    let got = receive_pattern(&mut r).await?;
    Ok(mbit_s(got, t))
}

pub(super) async fn probe_udp(to: SocketAddrV4) -> Result<(), ProbeError> {
    let s = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let line = random_line();
    for _ in 0..10 {
        s.send_to(line.as_bytes(), to).await?;
        let mut buf = [0u8; 64];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await
        {
            if &buf[..n] != line.as_bytes() {
                return Err(ProbeError::Differs {
                    sent: line,
                    got: String::from_utf8_lossy(&buf[..n]).into_owned(),
                });
            }
            return Ok(());
        }
    }
    Err(ProbeError::NoEcho(to))
}

pub(super) async fn quit(to: SocketAddrV4) -> Result<(), ProbeError> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| ProbeError::TimedOut(format!("connect to {to}")))??;
    s.write_all(QUIT).await?;
    Ok(())
}
