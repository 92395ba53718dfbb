//! WebSocket upgrades authenticated by a subprotocol entry or a query
//! parameter: the credential is removed before the handler sees the
//! request, the other offered subprotocol is echoed, and neither source
//! counts on ordinary requests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use axum::Extension;
use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use futures_util::StreamExt;
use http::StatusCode;
use palisade_auth::JwtAuthLayer;
use palisade_auth::source::TokenSources;
use palisade_core::principal::Principal;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn ws(
    upgrade: WebSocketUpgrade,
    Extension(principal): Extension<Principal>,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> impl IntoResponse {
    // What the handler saw: the subject, the URI and the offered protocols.
    let seen = format!(
        "{}|{}|{}",
        principal.subject(),
        uri,
        headers
            .get("sec-websocket-protocol")
            .map_or("", |v| v.to_str().unwrap())
    );
    upgrade.on_upgrade(move |mut socket| async move {
        let _ = socket.send(Message::text(seen)).await;
    })
}

async fn server() -> (std::net::SocketAddr, palisade_auth::issue::TokenIssuer) {
    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("k"), ISSUER, AUDIENCE, &clock);
    let auth = JwtAuthLayer::builder()
        .issuer(issuer.verifying_issuer())
        .sources(
            TokenSources::default()
                .websocket_protocol()
                .websocket_query("access_token"),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/plain", get(|| async { "plain" }))
        .layer(auth);
    (spawn_axum(app).await, issuer)
}

#[tokio::test]
async fn a_subprotocol_credential_is_stripped_and_the_other_protocol_echoed() {
    let (addr, issuer) = server().await;
    let token = issuer.mint("u1").sign().unwrap().token;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let offered = format!(
        "chat.v1, base64url.bearer.{}",
        URL_SAFE_NO_PAD.encode(&token)
    );
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offered.parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    let seen = socket.next().await.unwrap().unwrap();
    assert_eq!(seen.into_text().unwrap().as_str(), "u1|/ws|chat.v1");
}

#[tokio::test]
async fn a_query_credential_is_removed_from_the_uri_and_refused_outside_upgrades() {
    let (addr, issuer) = server().await;
    let token = issuer.mint("u2").sign().unwrap().token;
    let url = format!("ws://{addr}/ws?room=7&access_token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let seen = socket.next().await.unwrap().unwrap();
    assert_eq!(seen.into_text().unwrap().as_str(), "u2|/ws?room=7|");

    let plain = http_get(addr, &format!("/plain?access_token={token}"), &[]).await;
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
    let bad = format!("ws://{addr}/ws?access_token=a.b.c");
    match tokio_tungstenite::connect_async(&bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("a bad token upgraded: {:?}", other.map(|_| ())),
    }
}
