//! The pages themselves: each route's GET shows a form, its POST sends one request to qamd
//! and shows the outcome inline. No cookies, no sessions: every form carries all it needs.

use crate::config::Config;
use crate::form::Form;
use crate::qamd::{refusal, Qamd, Refusal, DEAD_LINK};
use crate::throttle::RateLimit;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use qam_client::Password;
use qam_client::{ClientError, ErrorCode};
use std::sync::Arc;

/// Everything a page handler needs, shared by all requests.
#[derive(Clone)]
pub struct Pages {
    /// The way to qamd.
    pub qamd: Qamd,
    /// Site name, name rules, services.
    pub config: Arc<Config>,
    /// The host-wide budget of open registrations.
    pub open_registrations: Arc<RateLimit>,
}

/// The routes; security headers, limits and logging are layered on in `server`.
pub fn routes(pages: Pages) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/join") }))
        .route("/style.css", get(style))
        .route("/join", get(join_open_form).post(join_open))
        .route("/join/{token}", get(join_invite_form).post(join_invite))
        .route("/password", get(password_form).post(change_password))
        .route("/reset/{token}", get(reset_form).post(reset_password))
        .fallback(not_found)
        .with_state(pages)
}

#[derive(Template)]
#[template(path = "join.html")]
struct JoinPage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
    /// Where the form posts: `/join`, or `/join/<token>` so an invite's token comes back
    /// with the form.
    action: &'a str,
    /// The username rules in words, shown under the username field.
    rules: &'a str,
    /// Why the last attempt was refused, shown above the form; `None` on a fresh form.
    message: Option<String>,
    /// The username typed last, put back in its field so a refusal does not lose it.
    user: String,
}

#[derive(Template)]
#[template(path = "closed.html")]
struct ClosedPage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
    /// Why the last attempt was refused, shown above the form; `None` on a fresh form.
    message: Option<String>,
    /// The username typed last, put back in its field so a refusal does not lose it.
    user: String,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
    /// Where the form posts: `/reset/<token>`, so the link's token comes back with the form.
    action: &'a str,
    /// The account the link is for, shown read-only in the username field so the user
    /// knows whose password they set.
    name: String,
    /// Why the last attempt was refused, shown above the form; `None` on a fresh form.
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "done.html")]
struct DonePage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
    /// What worked, as the page's title and heading.
    heading: &'a str,
    /// What to do from now on, in a sentence under the heading.
    summary: String,
    /// For a new account, where to use it: (service name, how this account is used there);
    /// empty after a password change.
    services: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "notice.html")]
struct NoticePage<'a> {
    /// The host's name, in the title, the header and the footer.
    site: &'a str,
    /// What the notice is about, as the page's title and heading.
    heading: &'a str,
    /// What happened and what the visitor can do about it.
    text: &'a str,
}

/// Renders a page with a status; a template that fails to render is a plain 500.
fn page(status: u16, template: &impl Template) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match template.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/style.css"),
    )
        .into_response()
}

async fn not_found(State(pages): State<Pages>) -> Response {
    let notice = NoticePage {
        site: &pages.config.site_name,
        heading: "Page not found",
        text: "There is no page at this address.",
    };
    page(404, &notice)
}

/// Decodes a form body and wipes the body's bytes when qam-web holds the only reference.
fn decode(body: Bytes) -> Option<Form> {
    let form = Form::decode(&body).ok();
    if let Ok(mut owned) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(owned.as_mut());
    }
    form
}

/// Shows the form a POST came from again, with a refusal and the name that was typed.
type Again<'a> = &'a dyn Fn(Refusal, String) -> Response;

/// A posted form with a new password (typed twice, equal): the form, the username typed and
/// the password; or the page to answer with instead.
fn read_posted(
    pages: &Pages,
    body: Bytes,
    again: Again,
) -> Result<(Form, String, Password), Box<Response>> {
    let Some(form) = decode(body) else {
        let notice = NoticePage {
            site: &pages.config.site_name,
            heading: "The form could not be read",
            text: "Go back and send the form again.",
        };
        return Err(Box::new(page(400, &notice)));
    };
    let user = form.text("user");
    let password = form.password("password");
    if password.expose() != form.password("password_again").expose() {
        let refused = Refusal::new(
            400,
            "The two new passwords are not the same. Type the new password twice.",
        );
        return Err(Box::new(again(refused, user)));
    }
    Ok((form, user, password))
}

/// The page for qamd's answer: `done` on success, the dead-link notice for a token that does
/// not work, else the form again with the refusal in words.
fn answer<T>(
    pages: &Pages,
    result: Result<T, ClientError>,
    again: Again,
    user: String,
    done: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(value) => done(value),
        Err(err) if err.code() == Some(ErrorCode::InvalidToken) => dead_link(pages),
        Err(err) => again(refusal(&err), user),
    }
}

/// A page saying something worked.
fn done(
    pages: &Pages,
    status: u16,
    heading: &str,
    summary: String,
    services: Vec<(String, String)>,
) -> Response {
    let done = DonePage {
        site: &pages.config.site_name,
        heading,
        summary,
        services,
    };
    page(status, &done)
}

/// The page after an account was made: what it is for.
fn welcome(pages: &Pages, name: &str) -> Response {
    let services = pages
        .config
        .services
        .iter()
        .map(|service| {
            (
                service.name.clone(),
                service.address.replace("{user}", name),
            )
        })
        .collect();
    let summary = format!(
        "Welcome, {name}. Your username and password now work for every service of {}.",
        pages.config.site_name
    );
    done(pages, 201, "Your account is ready", summary, services)
}

fn join_form(pages: &Pages, action: &str, refused: Option<Refusal>, user: String) -> Response {
    let status = refused.as_ref().map_or(200, |refusal| refusal.status);
    let join = JoinPage {
        site: &pages.config.site_name,
        action,
        rules: &pages.config.username_rules,
        message: refused.map(|refusal| refusal.message),
        user,
    };
    page(status, &join)
}

fn closed(pages: &Pages) -> Response {
    page(
        403,
        &ClosedPage {
            site: &pages.config.site_name,
        },
    )
}

fn dead_link(pages: &Pages) -> Response {
    let notice = NoticePage {
        site: &pages.config.site_name,
        heading: "This link does not work",
        text: DEAD_LINK,
    };
    page(404, &notice)
}

/// Whether `/join` takes accounts without an invite: qamd's registration is open and this
/// page's own budget is not zero.
async fn open_registration(pages: &Pages) -> Result<bool, ClientError> {
    let open = pages.qamd.registration_open().await?;
    Ok(open && pages.config.open_registrations_per_hour > 0)
}

async fn join_open_form(State(pages): State<Pages>) -> Response {
    match open_registration(&pages).await {
        Ok(true) => join_form(&pages, "/join", None, String::new()),
        Ok(false) => closed(&pages),
        Err(err) => join_form(&pages, "/join", Some(refusal(&err)), String::new()),
    }
}

async fn join_open(State(pages): State<Pages>, body: Bytes) -> Response {
    let again = |refused, user| join_form(&pages, "/join", Some(refused), user);
    let (_, user, password) = match read_posted(&pages, body, &again) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    match open_registration(&pages).await {
        Ok(true) => {}
        Ok(false) => return closed(&pages),
        Err(err) => return again(refusal(&err), user),
    }
    if !pages.open_registrations.try_take() {
        let refused = Refusal::new(
            429,
            "Many accounts were made here in the last hour. Try again later, or ask an admin \
             for an invite link.",
        );
        return again(refused, user);
    }
    let made = pages.qamd.register(user.clone(), password).await;
    answer(&pages, made, &again, user, |name| {
        tracing::info!("account made through open registration");
        welcome(&pages, &name)
    })
}

async fn join_invite_form(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let action = format!("/join/{token}");
    let again = |refused, user| join_form(&pages, &action, Some(refused), user);
    let works = pages.qamd.invite_info(Password::new(token)).await;
    answer(&pages, works, &again, String::new(), |()| {
        join_form(&pages, &action, None, String::new())
    })
}

async fn join_invite(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let action = format!("/join/{token}");
    let again = |refused, user| join_form(&pages, &action, Some(refused), user);
    let (_, user, password) = match read_posted(&pages, body, &again) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let made = pages
        .qamd
        .register_invite(Password::new(token), user.clone(), password)
        .await;
    answer(&pages, made, &again, user, |name| {
        tracing::info!("account made with an invite");
        welcome(&pages, &name)
    })
}

fn password_page(pages: &Pages, refused: Option<Refusal>, user: String) -> Response {
    let status = refused.as_ref().map_or(200, |refusal| refusal.status);
    let form = PasswordPage {
        site: &pages.config.site_name,
        message: refused.map(|refusal| refusal.message),
        user,
    };
    page(status, &form)
}

async fn password_form(State(pages): State<Pages>) -> Response {
    password_page(&pages, None, String::new())
}

async fn change_password(State(pages): State<Pages>, body: Bytes) -> Response {
    let again = |refused, user| password_page(&pages, Some(refused), user);
    let (form, user, new) = match read_posted(&pages, body, &again) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let current = form.password("current_password");
    let changed = pages.qamd.change_password(user.clone(), current, new).await;
    answer(&pages, changed, &again, user, |()| {
        let summary = format!(
            "Use the new password from now on, for every service of {}.",
            pages.config.site_name
        );
        done(&pages, 200, "Your password is changed", summary, Vec::new())
    })
}

fn reset_page(pages: &Pages, action: &str, refused: Option<Refusal>, name: String) -> Response {
    let status = refused.as_ref().map_or(200, |refusal| refusal.status);
    let form = ResetPage {
        site: &pages.config.site_name,
        action,
        name,
        message: refused.map(|refusal| refusal.message),
    };
    page(status, &form)
}

async fn reset_form(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let action = format!("/reset/{token}");
    let again = |refused, name| reset_page(&pages, &action, Some(refused), name);
    let account = pages.qamd.reset_info(Password::new(token)).await;
    answer(&pages, account, &again, String::new(), |name| {
        reset_page(&pages, &action, None, name)
    })
}

async fn reset_password(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let action = format!("/reset/{token}");
    let again = |refused, name| reset_page(&pages, &action, Some(refused), name);
    let (_, name, password) = match read_posted(&pages, body, &again) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let set = pages
        .qamd
        .reset_password(Password::new(token), password)
        .await;
    answer(&pages, set, &again, name, |name| {
        let summary = format!(
            "{name}, use the new password from now on, for every service of {}.",
            pages.config.site_name
        );
        done(&pages, 200, "Your new password is set", summary, Vec::new())
    })
}
