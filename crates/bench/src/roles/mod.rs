//! What a connected client does during a run: [`publisher`] sends, [`subscriber`] receives.
//! Each is one tokio task per connection that ends by itself (stop signal or hard deadline).

pub mod publisher;
pub mod subscriber;
