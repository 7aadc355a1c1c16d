use super::*;
use crate::buffer::BufferOptions;

fn entry(n: u32, cert: &str) -> RunVerdict {
    RunVerdict {
        run_id: format!("00000000-0000-4000-8000-{n:012}"),
        final_verdict: "pass".into(),
        computed: "pass".into(),
        evaluation_id: i64::from(n),
        evaluated_at_unix_ms: 1_700_000_000_000,
        decided_by: String::new(),
        certificate_id: cert.into(),
        certificate_state: if cert.is_empty() { "" } else { "valid" }.into(),
        verification_url: if cert.is_empty() {
            String::new()
        } else {
            format!("https://hub.example/api/v1/verify/{cert}")
        },
        protocol_id: "iec61215-stc".into(),
        bench_id: "bench-1".into(),
        sample_id: "sample:MOD-1".into(),
        run_state: "completed".into(),
        ended_at_unix_ms: 1_700_000_000_000 + i64::from(n),
    }
}

#[tokio::test]
async fn kept_across_a_reopen_merged_by_run_and_a_bad_list_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("buf");
    let id = entry(1, "").run_id;
    {
        let b = Arc::new(Buffer::open(&path, BufferOptions::with_cache(1 << 20)).expect("open"));
        let v = HubVerdicts::load(Arc::clone(&b)).expect("load");
        let n = v
            .apply(RunVerdicts {
                runs: vec![entry(1, ""), entry(2, "")],
            })
            .await
            .expect("apply");
        assert_eq!(n, 2);
        // The certificate arrives later, for run 1 only: run 2 stays.
        v.apply(RunVerdicts {
            runs: vec![entry(1, "QI-CERT-2026-000001")],
        })
        .await
        .expect("apply");
        assert_eq!(v.all().len(), 2);
        for bad in [
            RunVerdict {
                verification_url: "javascript:alert(1)".into(),
                ..entry(3, "QI-CERT-2026-000002")
            },
            RunVerdict {
                final_verdict: "maybe".into(),
                ..entry(3, "")
            },
            RunVerdict {
                run_id: "not-a-run".into(),
                ..entry(3, "")
            },
            RunVerdict {
                certificate_state: "valid".into(),
                ..entry(3, "")
            },
        ] {
            let r = v
                .apply(RunVerdicts {
                    runs: vec![entry(4, ""), bad],
                })
                .await;
            assert!(matches!(r, Err(ApplyError::Invalid(_))), "{r:?}");
        }
        assert_eq!(v.all().len(), 2, "a refused list is refused whole");
        b.flush().await.expect("flush");
    }
    let b = Arc::new(Buffer::open(&path, BufferOptions::with_cache(1 << 20)).expect("reopen"));
    let v = HubVerdicts::load(b).expect("load");
    let h = v.of(&id).expect("kept");
    assert_eq!(h.certificate_id.as_deref(), Some("QI-CERT-2026-000001"));
    assert_eq!(h.view()["final_verdict"], "pass");
    assert_eq!(
        h.view()["verification_url"],
        "https://hub.example/api/v1/verify/QI-CERT-2026-000001"
    );
    assert_eq!(h.run_view()["hub"]["certificate_state"], "valid");
}

#[test]
fn only_the_runs_that_ended_last_are_kept() {
    let now = 0;
    let mut known = BTreeMap::new();
    for n in 0..5 {
        let h = check(entry(n, ""), now).expect("valid");
        known.insert(h.run_id.clone(), h);
    }
    let gone = oldest_beyond(&known, 3);
    assert_eq!(gone, vec![entry(0, "").run_id, entry(1, "").run_id]);
    assert!(oldest_beyond(&known, 5).is_empty());
}
