//! Hedging: when the first backend has not answered within the hedge delay, the
//! same request (bodyless, retryable) goes to a second backend too, budget
//! permitting; the first answer wins. The slower attempt keeps running on its own
//! until it answers or times out, so that latency-aware balancing and passive
//! health learn from its real outcome.

use super::attempt::{Attempt, Outcomes, again_owned, send_owned};
use super::request::Prepared;
use crate::upstream::balance::Balancer;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{Conn, SendError};
use crate::upstream::pick::Tried;
use crate::upstream::pool::Pool;
use http::Request;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// What a hedged race needs of its request.
pub(super) struct Race<'a> {
    pub(super) pool: &'a Pool,
    pub(super) balancer: &'a Balancer,
    pub(super) prepared: &'a Prepared,
    /// No hedge is started past this.
    pub(super) deadline: Instant,
}

impl Race<'_> {
    /// Runs the first attempt, hedging it when it is slow; counts a hedge in
    /// `tried` and `attempts`.
    pub(super) async fn run(
        &self,
        first: (Attempt, Request<UpstreamBody>),
        delay: Duration,
        tried: &mut Tried,
        attempts: &mut u32,
    ) -> Outcomes {
        let (pool, p) = (self.pool, self.prepared);
        let (first, first_req) = first;
        let nth = u64::from(*attempts);
        let mut first_fut = send_owned(
            first.backend.clone(),
            first_req,
            p.encoded.clone(),
            pool.timeouts,
            Conn::Pooled,
        );
        // Wait for the first answer; every hedge delay without one, try to send the
        // same request to another backend (one that keeps answering, budget
        // permitting).
        let mut second = None;
        loop {
            tokio::select! {
                biased;
                mut r = first_fut.as_mut() => match again_owned(&mut r, &first.backend, p, nth) {
                    Some(req) => {
                        first_fut = send_owned(
                            first.backend.clone(),
                            req,
                            p.encoded.clone(),
                            pool.timeouts,
                            Conn::New,
                        );
                        continue;
                    }
                    None => return vec![(first, r)],
                },
                _ = tokio::time::sleep(delay) => {}
            }
            if let Some(i) = pool.pick_for_hedge(self.balancer, &p.key, tried)
                && pool.state.spend_hedge()
            {
                second = p
                    .out
                    .build(UpstreamBody::Empty)
                    .map(|mut req| (Attempt::start(pool, i, &mut req, p, None, None), req));
                break;
            }
            if Instant::now() >= self.deadline {
                break;
            }
        }
        let Some((second, second_req)) = second else {
            return vec![(first, first_fut.await)];
        };
        tried.add(second.idx);
        *attempts += 1;
        pool.state.hedges.fetch_add(1, Relaxed);
        let second_fut = send_owned(
            second.backend.clone(),
            second_req,
            p.encoded.clone(),
            pool.timeouts,
            Conn::Pooled,
        );
        let mut outcomes = Vec::with_capacity(2);
        let mut slots = [Some((first, first_fut)), Some((second, second_fut))];
        // Until one answers; a failed one leaves the other running.
        while slots.iter().any(Option::is_some) {
            let (i, r) = {
                let [a, b] = &mut slots;
                tokio::select! {
                    r = async { a.as_mut().expect("pending").1.as_mut().await }, if a.is_some() => (0, r),
                    r = async { b.as_mut().expect("pending").1.as_mut().await }, if b.is_some() => (1, r),
                }
            };
            let (ok, mut r) = (r.is_ok(), r);
            if let Some((attempt, _)) = slots[i].take() {
                if let Some(req) = again_owned(&mut r, &attempt.backend, p, nth) {
                    let fut = send_owned(
                        attempt.backend.clone(),
                        req,
                        p.encoded.clone(),
                        pool.timeouts,
                        Conn::New,
                    );
                    slots[i] = Some((attempt, fut));
                    continue;
                }
                outcomes.push((attempt, r));
            }
            if ok {
                break;
            }
        }
        for (attempt, fut) in slots.into_iter().flatten() {
            let passive = pool.passive.clone();
            tokio::spawn(async move {
                // Taken apart inside the task so that the in-flight guard lives until
                // the attempt really ends: the balancers must go on seeing it on that
                // backend.
                let Attempt {
                    backend,
                    guard,
                    sent_us,
                    ..
                } = attempt;
                let result = fut.await;
                let upstream_us = crate::clock::now_us().saturating_sub(sent_us);
                backend.observe_latency(upstream_us as f64);
                // A pooled connection it closed while idle is not the backend's fault.
                if matches!(&result, Err((e, _)) if !matches!(e, SendError::Closed(_))) {
                    backend.record_failure(&passive);
                }
                drop(guard);
            });
        }
        outcomes
    }
}
