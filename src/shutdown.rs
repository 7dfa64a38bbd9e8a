//! Process signals that start a graceful shutdown, and the loop background jobs run in until it.

/// Resolves on SIGINT (Ctrl-C, an operator at a terminal) or SIGTERM (what init systems and
/// orchestrators send before killing), whichever comes first.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Runs `tick` at once and then every `period`, until `shutdown` fires: the loop of every
/// background job, each owned by its service. A late tick is delayed, never bunched up.
pub async fn every<F, Fut>(
    period: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        tick().await;
    }
}

/// Starts a job on `tracker` that calls `tick` (quick, synchronous) at once and then every
/// `period`, until `shutdown` fires.
pub fn start_every(
    period: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    mut tick: impl FnMut() + Send + 'static,
) {
    tracker.spawn(every(period, shutdown.clone(), move || {
        tick();
        std::future::ready(())
    }));
}
