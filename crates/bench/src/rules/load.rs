//! `bench rules` load: every device publishing over MQTT at its phase, the WebSocket client
//! timing alarms (and probe telemetry) as they arrive, and the progress line.

use super::*;

/// The phases, on both clocks.
#[derive(Clone, Copy)]
pub(super) struct Timeline {
    go: Instant,
    end: Instant,
    /// The measured window in [`now_us`] time.
    window_us: (u64, u64),
}

pub(super) async fn traffic(
    a: &RulesArgs,
    plan: &Plan,
    made: &Made,
    password: &str,
    setup: &mut BTreeMap<&'static str, f64>,
) -> Result<RulesReport, BenchError> {
    let counters = Arc::new(Counters::default());
    let say = |m: String| {
        if !a.quiet {
            eprintln!("[rules] {m}");
        }
    };
    // The WebSocket first, so that no alarm is missed; on its own thread, so that its arrival
    // times do not wait for the publishers.
    let token = login(a.http, password)?;
    let cell = Arc::new(OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(Hists::default()));
    let probes: Vec<String> = made
        .devices
        .iter()
        .take(a.probe_devices as usize)
        .map(|(id, _)| id.clone())
        .collect();
    let reader = spawn_reader(
        a.http,
        token,
        probes,
        cell.clone(),
        counters.clone(),
        hist.clone(),
        stop.clone(),
    )?;
    // Devices connect.
    let t = Instant::now();
    let endpoint = Arc::new(Endpoint {
        addr: a.mqtt,
        transport: Transport::Tcp,
        ws_url: String::new(),
        tls: None,
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut connecting = Vec::with_capacity(made.devices.len());
    for (d, (_, token)) in made.devices.iter().enumerate() {
        let (gate, endpoint, token) = (gate.clone(), endpoint.clone(), token.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            let opts = ConnectOptions {
                protocol: Protocol::V311,
                client_id: format!("rules-bench-{d}"),
                keep_alive: 600,
                username: Some(token),
                password: None,
            };
            tokio::time::timeout(
                Duration::from_secs(30),
                MqttConn::connect(&endpoint, None, &opts, 512),
            )
            .await
        }));
    }
    let mut conns = Vec::with_capacity(connecting.len());
    for (d, c) in connecting.into_iter().enumerate() {
        match c.await {
            Ok(Ok(Ok(conn))) => conns.push(conn),
            Ok(Ok(Err(e))) => {
                return Err(BenchError::Rules(format!(
                    "device {d} could not connect: {e}"
                )))
            }
            _ => return Err(BenchError::Rules(format!("device {d}: connect timed out"))),
        }
    }
    setup.insert("mqtt_connect", t.elapsed().as_secs_f64());
    say(format!(
        "{} devices connected in {:.1} s; {:.0} msgs/s for {:.0}+{:.0} s",
        conns.len(),
        t.elapsed().as_secs_f64(),
        a.rate,
        a.warmup,
        a.duration
    ));
    // The timeline.
    let now = Instant::now();
    let mono = now_us();
    let go = now + Duration::from_millis(200);
    let measure = go + Duration::from_secs_f64(a.warmup);
    let end = measure + Duration::from_secs_f64(a.duration);
    let at_us = |i: Instant| mono + (i - now).as_micros() as u64;
    let timeline = Timeline {
        go,
        end,
        window_us: (at_us(measure), at_us(end)),
    };
    let _ = cell.set(timeline);
    let before = server_counters(a.http);
    // Publishers.
    let period = Duration::from_secs_f64(plan.devices as f64 / a.rate);
    let mut tasks = Vec::with_capacity(conns.len());
    for (d, conn) in conns.into_iter().enumerate() {
        let offset = period.mul_f64(d as f64 / plan.devices as f64);
        let (counters, plan) = (counters.clone(), plan.clone());
        let qos = a.qos;
        tasks.push(tokio::spawn(async move {
            let r = device(
                conn,
                d,
                &plan,
                qos,
                timeline,
                go + offset,
                period,
                &counters,
            )
            .await;
            if let Err(e) = r {
                counters.error(format!("device {d}: {e}"));
            }
        }));
    }
    let progress = (!a.quiet).then(|| tokio::spawn(progress(counters.clone(), timeline)));
    tokio::time::sleep_until(measure.into()).await;
    let cpu_at_measure = a.server_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    tokio::time::sleep_until(end.into()).await;
    let cpu_at_end = a.server_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let rss = a
        .server_pid
        .and_then(procfs::rss_kib)
        .map(|k| k as f64 / 1024.0);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    // The drain: until every expected alarm arrived, or nothing came for 2 s, or --drain.
    let expected = counters.high_in_window.load(Relaxed);
    let drain_end = Instant::now() + Duration::from_secs_f64(a.drain);
    let mut last = (counters.raises.load(Relaxed), Instant::now());
    while Instant::now() < drain_end && counters.raises_in_window.load(Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = counters.raises.load(Relaxed);
        if r != last.0 {
            last = (r, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    stop.store(true, Relaxed);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let after = server_counters(a.http);
    let seconds = a.duration;
    let c = &counters;
    let published = c.sent_in_window.load(Relaxed);
    let received = c.raises_in_window.load(Relaxed);
    let rules_per_message = plan.rules as f64 / plan.profiles as f64 + a.tenant_rules as f64;
    let (latency, telemetry_latency) = {
        let h = hist.lock().expect("not poisoned");
        (LatencyMs::of(&h.alarm), LatencyMs::of(&h.telemetry))
    };
    let target_p99_ms = 10.0;
    let last_error = c.last_error.lock().expect("not poisoned").clone();
    Ok(RulesReport {
        devices: plan.devices,
        profiles: plan.profiles,
        rules: plan.rules,
        tenant_rules: a.tenant_rules,
        rules_per_message,
        qos: a.qos,
        target_rate: a.rate,
        alarm_ratio: a.alarm_ratio,
        seconds,
        published,
        publish_rate: published as f64 / seconds,
        acked: (a.qos == 1).then(|| c.acked_in_window.load(Relaxed)),
        evaluations_per_s: published as f64 * rules_per_message / seconds,
        alarms_expected: expected,
        alarms_received: received,
        alarms_missing: expected.saturating_sub(received),
        clears_received: c.clears.load(Relaxed),
        alarm_rate: received as f64 / seconds,
        target_met: latency.as_ref().is_some_and(|l| l.p99 <= target_p99_ms)
            && received >= expected,
        latency_ms: latency,
        telemetry_latency_ms: telemetry_latency,
        target_p99_ms,
        ws_dropped: c.dropped.load(Relaxed),
        server: match (cpu_at_measure, cpu_at_end) {
            (Some(b), Some(e)) => Some(ServerUsage {
                cpu_cores: (e - b) / seconds,
                rss_mib: rss,
            }),
            _ => None,
        },
        server_counters: after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .collect(),
        setup_seconds: BTreeMap::new(),
        errors: c.errors.load(Relaxed),
        last_error,
    })
}

type LiveSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Latencies in µs seen on the live socket.
pub(super) struct Hists {
    alarm: Histogram<u64>,
    telemetry: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        let new = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        Hists {
            alarm: new(),
            telemetry: new(),
        }
    }
}

/// Opens `/api/v1/ws` with the bearer token and subscribes to every alarm, and to the
/// `sent_us` telemetry of the `probes`.
pub(super) async fn live_socket(
    addr: SocketAddr,
    token: &str,
    probes: &[String],
) -> Result<LiveSocket, BenchError> {
    let fail = |e: String| BenchError::Rules(format!("live WebSocket: {e}"));
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    let bearer =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| fail(e.to_string()))?;
    request.headers_mut().insert("Authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut commands = vec![json!({"subscribe": "alarms"})];
    commands.extend(
        probes
            .iter()
            .map(|d| json!({"subscribe": "telemetry", "device": d, "keys": ["sent_us"]})),
    );
    for c in &commands {
        ws.send(Message::text(c.to_string()))
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let wait = async {
        let mut subscribed = 0;
        while let Some(msg) = ws.next().await {
            let Ok(Message::Text(text)) = msg else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            match v["type"].as_str() {
                Some("subscribed") => {
                    subscribed += 1;
                    if subscribed == commands.len() {
                        return Ok(());
                    }
                }
                Some("error") => return Err(fail(format!("refused: {v}"))),
                _ => {}
            }
        }
        Err(fail("closed before subscribing".into()))
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| fail("no answer to the subscription".into()))??;
    Ok(ws)
}

/// The live socket's reader on a thread of its own (a current-thread runtime), from the
/// subscription until `stop`; returns once subscribed.
pub(super) fn spawn_reader(
    addr: SocketAddr,
    token: String,
    probes: Vec<String>,
    timeline: Arc<OnceLock<Timeline>>,
    c: Arc<Counters>,
    hist: Arc<Mutex<Hists>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, BenchError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("live-ws".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(BenchError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut ws = match live_socket(addr, &token, &probes).await {
                    Ok(ws) => {
                        let _ = ready_tx.send(Ok(()));
                        ws
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut check = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        msg = ws.next() => {
                            let arrived = now_us();
                            match msg {
                                Some(Ok(Message::Text(text))) => {
                                    update(text.as_str(), arrived, timeline.get(), &c, &hist)
                                }
                                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                                    if !stop.load(Relaxed) {
                                        c.error("the live WebSocket closed");
                                    }
                                    return;
                                }
                                Some(Ok(_)) => {}
                            }
                        }
                        _ = check.tick() => {
                            if stop.load(Relaxed) {
                                let _ = ws.close(None).await;
                                return;
                            }
                        }
                    }
                }
            });
        })
        .map_err(|e| BenchError::Rules(format!("starting the WebSocket thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| BenchError::Rules("the WebSocket thread ended".into()))??;
    Ok(thread)
}

/// One message from the live socket: alarm raises and probe telemetry are timed, clears and
/// drops counted.
pub(super) fn update(
    text: &str,
    arrived: u64,
    timeline: Option<&Timeline>,
    c: &Counters,
    hist: &Mutex<Hists>,
) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let inside =
        |sent: u64| timeline.is_some_and(|t| (t.window_us.0..t.window_us.1).contains(&sent));
    match v["type"].as_str() {
        Some("telemetry") => {
            let points = v["data"]["sent_us"].as_array().into_iter().flatten();
            for sent in points.filter_map(|p| p["value"].as_f64()) {
                let sent = sent as u64;
                if inside(sent) {
                    let us = arrived.saturating_sub(sent).max(1);
                    let _ = hist.lock().expect("not poisoned").telemetry.record(us);
                }
            }
        }
        Some("alarm") => {
            let alarm = &v["alarm"];
            let ours = alarm["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("rules-bench r"));
            if !ours {
                return;
            }
            if alarm["cleared"].as_bool() == Some(true) {
                c.clears.fetch_add(1, Relaxed);
                return;
            }
            c.raises.fetch_add(1, Relaxed);
            let Some(sent) = alarm["details"]["values"]["sent_us"].as_f64() else {
                c.error(format!("an alarm without sent_us: {alarm}"));
                return;
            };
            let sent = sent as u64;
            let us = arrived.saturating_sub(sent).max(1);
            c.max_us.fetch_max(us, Relaxed);
            if inside(sent) {
                c.raises_in_window.fetch_add(1, Relaxed);
                let _ = hist.lock().expect("not poisoned").alarm.record(us);
            }
        }
        Some("dropped") => {
            c.dropped
                .fetch_add(v["count"].as_u64().unwrap_or(0), Relaxed);
        }
        Some("error") => c.error(format!("live WebSocket: {v}")),
        _ => {}
    }
}

/// One device: a message every `period` from `first` until the end of the window.
#[allow(clippy::too_many_arguments)]
pub(super) async fn device(
    mut conn: MqttConn,
    d: usize,
    plan: &Plan,
    qos: u8,
    timeline: Timeline,
    first: Instant,
    period: Duration,
    c: &Counters,
) -> Result<(), crate::ClientError> {
    let mut tick = tokio::time::interval_at(first.into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seq, mut pid) = (0u64, 0u16);
    let mut out = BytesMut::with_capacity(128);
    let qos = if qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    // Packet id → whether that message was sent inside the window.
    let mut counted = std::collections::HashMap::new();
    let end = timeline.end;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end {
                    break;
                }
                let high = plan.high(d, seq);
                let temp = match high {
                    Some(r) => format!("{}.5", Plan::band(r).0),
                    None => format!("20.{}", seq % 10),
                };
                let sent = now_us();
                let payload = format!("{{\"temp\":{temp},\"sent_us\":{sent}}}");
                if qos == QoS::AtLeastOnce {
                    pid = pid.wrapping_add(1).max(1);
                }
                let publish = Publish {
                    topic: "v1/devices/me/telemetry".into(),
                    payload: payload.into_bytes().into(),
                    qos,
                    packet_id: pid,
                    ..Publish::default()
                };
                out.clear();
                conn.encode(&Packet::Publish(publish), &mut out);
                conn.send(&out).await?;
                seq += 1;
                c.sent.fetch_add(1, Relaxed);
                let inside = (timeline.window_us.0..timeline.window_us.1).contains(&sent);
                if inside {
                    c.sent_in_window.fetch_add(1, Relaxed);
                    if high.is_some() {
                        c.high_in_window.fetch_add(1, Relaxed);
                    }
                }
                if qos == QoS::AtLeastOnce {
                    counted.insert(pid, inside);
                }
            }
            r = conn.fill() => {
                r?;
                while let Some(incoming) = conn.next_incoming()? {
                    match incoming {
                        Incoming::PubAck(id, code)
                            if counted.remove(&id) == Some(true) && code.is_success() =>
                        {
                            c.acked_in_window.fetch_add(1, Relaxed);
                        }
                        Incoming::Disconnect(code) => {
                            return Err(crate::ClientError::Disconnected(code));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    // The last acknowledgements.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !counted.is_empty() {
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        while let Some(incoming) = conn.next_incoming()? {
            if let Incoming::PubAck(id, code) = incoming {
                if counted.remove(&id) == Some(true) && code.is_success() {
                    c.acked_in_window.fetch_add(1, Relaxed);
                }
            }
        }
    }
    conn.disconnect().await;
    Ok(())
}

/// One line a second on stderr: phase, messages sent, alarms raised and cleared, the largest
/// latency of the second.
pub(super) async fn progress(c: Arc<Counters>, timeline: Timeline) {
    let start = timeline.go;
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let (mut sent, mut raises, mut clears, mut last) = (0, 0, 0, start);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let secs = (now - last).as_secs_f64().max(1e-3);
        let (s, r, cl) = (
            c.sent.load(Relaxed),
            c.raises.load(Relaxed),
            c.clears.load(Relaxed),
        );
        let phase = if now >= timeline.end {
            "drain"
        } else if now_us() >= timeline.window_us.0 {
            "measure"
        } else {
            "warmup"
        };
        let rate = |d: u64| thousands((d as f64 / secs).round() as u64);
        let mut line = format!(
            "[rules] {:6.1}s {phase:<8} sent {:>7}/s  alarms {:>5}/s  clears {:>5}/s  max {:>7.1} ms",
            (now - start).as_secs_f64(),
            rate(s - sent),
            rate(r - raises),
            rate(cl - clears),
            c.max_us.swap(0, Relaxed) as f64 / 1000.0
        );
        let errors = c.errors.load(Relaxed);
        if errors > 0 {
            line.push_str(&format!("  errors {errors}"));
        }
        eprintln!("{line}");
        (sent, raises, clears, last) = (s, r, cl, now);
    }
}
