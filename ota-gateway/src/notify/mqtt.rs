//! The MQTT publisher: one broker connection per gateway process, the latest message of
//! every topic kept in memory and published again on each new connection, so a broker
//! that was down (or restarted without persistence) ends up holding the latest retained
//! state as soon as it is back. Publishing never waits for the broker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::task::JoinHandle;

use super::{read, read_secret, NotifyError};
use updraft_core::backoff::Backoff;
use updraft_core::config::MqttConfig;

/// Requests queued towards the broker before `publish` drops one (the latest message
/// of its topic is still published on the next connection).
const QUEUE: usize = 1024;
/// Reconnection attempts back off from 500 ms, doubling up to 8 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The latest message of each topic.
pub(super) type Latest = BTreeMap<String, Bytes>;

/// The latest messages and whether the broker has accepted the connection: one lock,
/// so a message is sent either by `publish` or by the (re)connect, never by both.
#[derive(Default)]
struct Shared {
    latest: Latest,
    connected: bool,
}

/// Everything a connection needs, files read; equal settings keep the connection.
#[derive(Clone, PartialEq)]
pub(super) struct Settings {
    /// Topic prefix without a trailing `/`.
    pub(super) prefix: String,
    host: String,
    port: u16,
    client_id: String,
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
}

#[derive(Clone, PartialEq)]
struct Tls {
    /// PEM CA bundle; the system's roots when absent.
    ca: Option<Vec<u8>>,
    /// PEM client certificate and key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Settings {
    /// Parses the URL and reads the files `config` names.
    pub(super) fn load(config: &MqttConfig) -> Result<Self, NotifyError> {
        let url = config.url.as_str();
        let bad = |reason| NotifyError::Url { url: url.to_owned(), reason };
        let (tls, rest) = match url.split_once("://") {
            Some(("mqtt", rest)) => (false, rest),
            Some(("mqtts", rest)) => (true, rest),
            _ => return Err(bad("the scheme must be mqtt:// or mqtts://")),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('@') {
            return Err(bad("put credentials in credentialsSecret (usernameFile/passwordFile), not in the URL"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]` has colons but no port.
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("the port is not a number"))?)
            }
            _ => (authority, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let client_id = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(default_client_id);
        let tls = if tls {
            let ca = config.ca_file.as_deref().map(read).transpose()?;
            let client = match (&config.client_cert_file, &config.client_key_file) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            Some(Tls { ca, client })
        } else {
            None
        };
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        let credentials = match &config.username_file {
            Some(user) => Some((
                text(read_secret(user)?),
                config.password_file.as_deref().map(read_secret).transpose()?.map(text).unwrap_or_default(),
            )),
            None => None,
        };
        Ok(Self {
            prefix: config.topic_prefix.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port,
            client_id,
            tls,
            credentials,
        })
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &self.tls {
            let config = match &tls.ca {
                Some(ca) => TlsConfiguration::Simple { ca: ca.clone(), alpn: None, client_auth: tls.client.clone() },
                None => TlsConfiguration::default(),
            };
            options.set_transport(Transport::tls_with_config(config));
        }
        options
    }
}

/// A client id unique to this process and stable across reloads (an unchanged config
/// keeps its connection): brokers disconnect the older of two sessions with the same
/// id, and every replica publishes.
fn default_client_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
        format!("updraft-{host}-{:08x}", rand::random::<u32>())
    })
    .clone()
}

/// A live broker connection and the latest message of each topic.
pub(super) struct Publisher {
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Connects in the background; `latest` is published as soon as the broker accepts
    /// the connection.
    pub(super) fn start(settings: &Settings, latest: Latest) -> Self {
        let (client, mut events) = AsyncClient::new(settings.options(), QUEUE);
        let shared = Arc::new(Mutex::new(Shared { latest, connected: false }));
        let (task_client, task_shared) = (client.clone(), shared.clone());
        let broker = format!("{}:{}", settings.host, settings.port);
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
            let mut up = false;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let mut shared = task_shared.lock().expect("shared lock");
                        tracing::info!(%broker, topics = shared.latest.len(), "mqtt connected; publishing the latest messages");
                        for (topic, payload) in &shared.latest {
                            send(&task_client, topic.clone(), payload.clone());
                        }
                        shared.connected = true;
                        up = true;
                        backoff.reset();
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        tracing::debug!(pkid = ack.pkid, "mqtt publish acknowledged")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        task_shared.lock().expect("shared lock").connected = false;
                        if up {
                            tracing::warn!(%broker, error = %e, "mqtt connection lost; reconnecting");
                        } else {
                            tracing::debug!(%broker, error = %e, "mqtt broker unreachable; retrying");
                        }
                        up = false;
                        tokio::time::sleep(backoff.wait()).await;
                    }
                }
            }
        });
        Self { client, shared, task }
    }

    /// Records `payload` as the latest of `topic` and publishes it, unless it is what
    /// the topic already holds. While disconnected it goes out on the next connection.
    pub(super) fn publish(&self, topic: String, payload: Bytes) {
        let mut shared = self.shared.lock().expect("shared lock");
        if shared.latest.get(&topic) == Some(&payload) {
            return;
        }
        shared.latest.insert(topic.clone(), payload.clone());
        tracing::info!(%topic, payload = %String::from_utf8_lossy(&payload), connected = shared.connected, "mqtt publish");
        if shared.connected {
            send(&self.client, topic, payload);
        }
    }

    /// Disconnects; returns the latest messages, for the next publisher.
    pub(super) fn stop(self) -> Latest {
        let _ = self.client.try_disconnect();
        let latest = self.shared.lock().expect("shared lock").latest.clone();
        latest
        // Dropping `self` stops the connection task.
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Queues a retained QoS 1 publish without waiting; a full queue drops it (the topic's
/// latest message goes out again on the next connection).
fn send(client: &AsyncClient, topic: String, payload: Bytes) {
    if let Err(e) = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload) {
        tracing::warn!(%topic, error = %e, "mqtt queue full; the message goes out on the next connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(url: &str) -> Result<Settings, NotifyError> {
        let config = MqttConfig {
            url: url.into(),
            topic_prefix: "firmware/updates/".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username_file: None,
            password_file: None,
        };
        Settings::load(&config)
    }

    #[test]
    fn urls_as_otaflux_takes_them() {
        let plain = load("mqtt://broker").unwrap();
        assert_eq!((plain.host.as_str(), plain.port, plain.tls.is_none()), ("broker", 1883, true));
        assert_eq!(plain.prefix, "firmware/updates");
        assert!(plain.client_id.starts_with("updraft-"));
        assert_eq!(plain.client_id, load("mqtt://other").unwrap().client_id, "stable within a process");
        let tls = load("mqtts://broker.lan:18883/?client_id=otaflux").unwrap();
        assert_eq!((tls.host.as_str(), tls.port, tls.client_id.as_str()), ("broker.lan", 18883, "otaflux"));
        assert!(tls.tls.is_some_and(|t| t.ca.is_none() && t.client.is_none()));
        let v6 = load("mqtt://[::1]:1884").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1884));
        assert_eq!(load("mqtt://[::1]").unwrap().port, 1883);
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |url: &str| load(url).err().expect(url).to_string();
        assert!(err("tcp://broker").contains("scheme"));
        assert!(err("mqtt://user:pass@broker").contains("credentialsSecret"));
        assert!(err("mqtt://broker:http").contains("port"));
        assert!(err("mqtt://:1883").contains("no host"));
    }
}
