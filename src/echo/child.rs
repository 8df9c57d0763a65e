//! The child: a line-echo and stream server on its TCP port and a datagram echo on its UDP port,
//! until the parent says `QUIT` or its window ends.

use super::stream::*;
use super::*;

/// Serves line echo on TCP and datagram echo on UDP until `QUIT` or the window ends; returns
/// how many connections it served.
pub(super) async fn run(window: Duration) -> Result<u64, EchoError> {
    let tcp = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)).await?;
    let udp = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)).await?;
    eprintln!("echo: child listening on {TCP_PORT}/tcp and {UDP_PORT}/udp");
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], from).await;
        }
    });
    let mut served = 0;
    let end = tokio::time::sleep(window);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = quit_rx.recv() => break,
            accepted = tcp.accept() => {
                let (s, peer) = accepted?;
                served += 1;
                eprintln!("echo: connection from {peer}");
                let quit_tx = quit_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(s, quit_tx).await {
                        eprintln!("echo: connection from {peer}: {e}");
                    }
                });
            }
        }
    }
    udp_task.abort();
    Ok(served)
}

/// One connection to the child: echoed lines, or one command.
pub(super) async fn serve(
    s: tokio::net::TcpStream,
    quit: tokio::sync::mpsc::Sender<()>,
) -> Result<(), ProbeError> {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            return Err(ProbeError::BadCommand(format!(
                "a line of {} bytes or more",
                line.len()
            )));
        }
        if line == QUIT {
            let _ = quit.send(()).await;
            return Ok(());
        }
        if line == SINK {
            // The answer is the count of bytes that matched to the end; a mismatch or a
            // failed read ends the connection without one, which the parent reports.
            let got = receive_pattern(&mut lines).await?;
            w.write_all(format!("{got}\n").as_bytes()).await?;
            return Ok(());
        }
        if let Some(ms) = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim_end().strip_prefix(SOURCE))
        {
            let ms: u64 = ms
                .parse()
                .map_err(|_| ProbeError::BadCommand(String::from_utf8_lossy(&line).into()))?;
            // At most a minute: the parent asks for seconds.
            send_pattern(&mut w, Duration::from_millis(ms.min(60_000))).await?;
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&line).await?;
    }
}
