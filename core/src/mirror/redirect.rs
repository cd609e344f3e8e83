//! Which redirects a mirror's HTTP client follows. A store's key travels in filuxe's
//! `key` header, and reqwest keeps custom headers when it follows a redirect to another
//! host (it drops only `Authorization` and cookies). So a store, or anyone able to
//! answer for its URL, could redirect the worker to a host of its choosing and read the
//! key there. Both sides that send keys (the worker's copies, the operator's listings)
//! build their clients with [`policy`]: a redirect is followed only to the same origin
//! (scheme, host and port), as filuxe's own server sends them (`/filelist//` to the root
//! listing); any other ends the request with the 3xx answer, which fails it.

use reqwest::redirect::{Attempt, Policy};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Same-origin redirects only, at most [`MAX_REDIRECTS`].
pub fn policy() -> Policy {
    Policy::custom(|attempt: Attempt| {
        let first = attempt.previous().first().cloned();
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if first.is_some_and(|from| from.origin() == attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A one-request-per-connection HTTP server answering `answer(path)`; sends each
    /// request's `key` header (or `-`) on the returned channel.
    fn server(answer: impl Fn(&str) -> String + Send + 'static) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let mut key = "-".to_owned();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("key:") {
                        key = v.trim().to_owned();
                    }
                }
                let _ = tx.send(format!("{path} {key}"));
                let _ = conn.write_all(answer(&path).as_bytes());
            }
        });
        (base, rx)
    }

    fn redirect_to(location: String) -> impl Fn(&str) -> String {
        move |_| format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    fn ok(_: &str) -> String {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_owned()
    }

    /// The key never reaches another host: the worker that was told to redirect is
    /// answered 302 and stops there. Without the policy, reqwest sent `key` on.
    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_with_the_key() {
        let (elsewhere, seen_elsewhere) = server(ok);
        let (store, seen_at_store) = server(redirect_to(format!("{elsewhere}/steal")));
        let client = reqwest::Client::builder().redirect(super::policy()).build().unwrap();
        let answer = client.get(format!("{store}/filelist/")).header("key", "s3cret").send().await.unwrap();
        assert_eq!(answer.status(), 302);
        assert_eq!(seen_at_store.recv().unwrap(), "/filelist/ s3cret");
        assert!(seen_elsewhere.try_recv().is_err(), "the other host was asked");
    }

    /// filuxe's own redirect (`/filelist//` to the root listing) is followed.
    #[tokio::test]
    async fn a_redirect_within_the_store_is_followed() {
        let (base, seen) =
            server(
                move |path: &str| {
                    if path == "/filelist//" {
                        redirect_to("/filelist/".to_owned())(path)
                    } else {
                        ok(path)
                    }
                },
            );
        let client = reqwest::Client::builder().redirect(super::policy()).build().unwrap();
        let answer = client.get(format!("{base}/filelist//")).header("key", "k").send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(seen.recv().unwrap(), "/filelist// k");
        assert_eq!(seen.recv().unwrap(), "/filelist/ k");
    }
}
