//! Who is calling: the authenticated principal the authentication layer (`crate::auth`) put
//! on the request, and whether a peer node forwarded the call on that principal's behalf.
//! Authorisation happens once, in the cores, through [`Caller::require`].

use super::error::{self, ApiError};
use sessiond_security::{Principal, Role};

/// The caller of one API call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Forwarded by a peer node (authenticated by its node certificate, or any host when the
    /// node runs `--insecure`): the receiving node must not forward it again.
    pub forwarded: bool,
}

impl Caller {
    /// A caller that reached this node directly.
    pub fn direct(principal: Principal) -> Caller {
        Caller {
            principal,
            forwarded: false,
        }
    }

    /// The principal's name: what request ids are scoped to.
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// Refuse the call unless the principal holds `role` (an operator may do everything).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.principal.may(role) {
            Ok(())
        } else {
            Err(error::permission_denied(format!(
                "principal {:?} does not hold the {role} role",
                self.principal.name
            )))
        }
    }
}
