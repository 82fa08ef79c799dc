//! user.v1.UserService over a real server: every RPC, validation, uniqueness, paging,
//! streaming and bulk creation.

mod crud;
mod listing;
mod validation;

use std::{collections::HashMap, time::Duration};

use activity_hub::proto::user::v1::{
    get_user_request::Identifier, CreateUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest,
    UserRole, UserStatus,
};
use tonic::Code;

use crate::{
    dual,
    helpers::{assert_status, authed, by_id, eventually, Backend, TestDb, TestServer, PASSWORD},
};

pub(super) fn new_user(name: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: format!("{name}@example.com"),
        username: name.to_string(),
        password: PASSWORD.into(),
        first_name: format!("First{name}"),
        last_name: "Tester".into(),
        roles: vec![],
    }
}
