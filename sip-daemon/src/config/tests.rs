//! Loading: the settings with a fixed set of values are typed, so a value
//! outside the set fails the load with serde's message naming the key.

use super::*;

/// `Config::load` of `text`, from a file as the daemon reads it.
fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

/// The load's error for `text`, which must fail.
fn refused(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

const TRUNK: &str = "[[accounts]]\nid = \"a\"\n[[trunks]]\nname = \"carrier\"\n";

#[test]
fn the_accepted_spellings_load_as_before() {
    let cfg = load(&format!(
        "[media]\nxdp = \"off\"\n[log]\nformat = \"json\"\n[webhooks]\nvoice_on_failure = \"reject\"\n\
         {TRUNK}transport = \"tcp\"\ntransfer = \"refer\"\n"
    ))
    .unwrap();
    assert_eq!(cfg.media.xdp, XdpSetting::Off);
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert_eq!(cfg.webhooks.voice_on_failure, VoiceOnFailure::Reject);
    assert_eq!(cfg.trunks[0].transport, TransportKind::Tcp);
    assert_eq!(cfg.trunks[0].transfer, Some(TrunkTransfer::Refer));
    let p = cfg.provisioning();
    assert_eq!(p.trunks[0].transport, "tcp");
    assert_eq!(p.trunks[0].transfer.as_deref(), Some("refer"));
    assert!(!cfg.core_config().voice_fallback_to_route);

    let cfg = load(TRUNK).unwrap();
    assert_eq!(cfg.media.xdp, XdpSetting::Auto);
    assert_eq!(cfg.log.format, LogFormat::Text);
    assert_eq!(cfg.webhooks.voice_on_failure, VoiceOnFailure::Route);
    assert_eq!(cfg.trunks[0].transport, TransportKind::Udp);
    assert_eq!(cfg.trunks[0].transfer, None);
    assert_eq!(cfg.provisioning().trunks[0].transport, "udp");
    assert!(cfg.core_config().voice_fallback_to_route);
}

#[test]
fn a_bad_media_xdp_names_the_key() {
    let err = refused("[media]\nxdp = \"maybe\"\n");
    assert!(err.contains("xdp = \"maybe\""), "{err}");
    assert!(
        err.contains("unknown variant `maybe`, expected one of `auto`, `on`, `off`"),
        "{err}"
    );
}

#[test]
fn a_bad_log_format_names_the_key() {
    let err = refused("[log]\nformat = \"xml\"\n");
    assert!(err.contains("format = \"xml\""), "{err}");
    assert!(
        err.contains("unknown variant `xml`, expected `text` or `json`"),
        "{err}"
    );
}

#[test]
fn a_bad_voice_on_failure_names_the_key() {
    let err = refused("[webhooks]\nvoice_on_failure = \"retry\"\n");
    assert!(err.contains("voice_on_failure = \"retry\""), "{err}");
    assert!(
        err.contains("unknown variant `retry`, expected `route` or `reject`"),
        "{err}"
    );
}

#[test]
fn a_bad_trunk_transport_names_the_key() {
    let err = refused(&format!("{TRUNK}transport = \"sctp\"\n"));
    assert!(err.contains("transport = \"sctp\""), "{err}");
    assert!(
        err.contains("unknown variant `sctp`, expected one of `udp`, `tcp`, `tls`"),
        "{err}"
    );
}

#[test]
fn a_bad_trunk_transfer_names_the_key() {
    let err = refused(&format!("{TRUNK}transfer = \"blind\"\n"));
    assert!(err.contains("transfer = \"blind\""), "{err}");
    assert!(
        err.contains("unknown variant `blind`, expected `bridge` or `refer`"),
        "{err}"
    );
}

#[test]
fn with_environment_variables_the_key_is_named_by_its_path() {
    // Typed after expansion, from a TOML value: no line to show, the path
    // instead.
    let err = refused(&format!(
        "{TRUNK}password = \"$${{literal}}\"\ntransfer = \"blind\"\n"
    ));
    assert!(err.contains("in `trunks.transfer`"), "{err}");
    assert!(err.contains("unknown variant `blind`"), "{err}");
    let err = refused("[sip]\nrealm = \"$${x}\"\n[media]\nxdp = \"maybe\"\n");
    assert!(err.contains("in `media.xdp`"), "{err}");
}
