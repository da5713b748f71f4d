//! A service declared, not assembled: its name, the migrations of its database and the
//! messaging channels it owns. [`Service::open`] opens the database (applying the
//! migrations), connects to the messaging backend and declares the channels, each failure
//! a [`StartError`] naming the service; [`Parts::serve`] then hosts the service's faces
//! ([`Application::build`]). What a service adds is only its own: faces and background
//! tasks.
//!
//! ```text
//! let parts = Service::new(SERVICE, &[&MIGRATIONS]).owning(events::channels()).open(settings).await?;
//! let app = parts.serve(faces).await?;
//! ```

use axum::Router;
use settings::{ServiceName, Settings};
use storage::{Database, Migrations};

use crate::{Application, StartError};

/// A service's declaration.
pub struct Service<'m> {
    name: ServiceName,
    migrations: &'m [&'m Migrations],
    channels: Vec<messaging::asyncapi::Channel>,
}

/// What a declared service is made of once open.
pub struct Parts<'a> {
    pub name: ServiceName,
    pub settings: &'a Settings,
    /// Its own database, migrated.
    pub db: Database,
    /// Connected, with the service's channels declared; `None` when it owns none.
    pub broker: Option<messaging::Broker>,
}

impl<'m> Service<'m> {
    /// A service whose database holds `migrations`' tables.
    pub fn new(name: ServiceName, migrations: &'m [&'m Migrations]) -> Self {
        Self {
            name,
            migrations,
            channels: Vec::new(),
        }
    }

    /// The queues and streams it owns (declared at start, so producers and consumers
    /// that are not Brigade can use them at once).
    pub fn owning(mut self, channels: Vec<messaging::asyncapi::Channel>) -> Self {
        self.channels = channels;
        self
    }

    /// Opens the database and, if the service owns channels, the messaging backend.
    pub async fn open<'a>(&self, settings: &'a Settings) -> Result<Parts<'a>, StartError> {
        let name = self.name;
        let db = Database::open(
            &settings.database_url(name),
            &settings.database,
            self.migrations,
        )
        .await
        .map_err(|e| StartError::database(name, e))?;
        let broker = if self.channels.is_empty() {
            None
        } else {
            let messaging = |e: messaging::MessagingError| StartError::Messaging {
                service: name,
                reason: e.to_string(),
            };
            // Every publish, delivery and settle is counted on this service's series.
            let broker = messaging::connect(settings)
                .await
                .map_err(messaging)?
                .for_service(name.as_str());
            messaging::declare(&broker, &self.channels, &settings.messaging)
                .await
                .map_err(messaging)?;
            Some(broker)
        };
        Ok(Parts {
            name,
            settings,
            db,
            broker,
        })
    }
}

impl Parts<'_> {
    /// Hosts `faces` (see [`Application::build`]).
    pub async fn serve(self, faces: Router) -> Result<Application, StartError> {
        Application::build(self.name, self.settings, self.db, faces).await
    }
}
