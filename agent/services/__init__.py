"""Clients for the backend services the car talks to, and the reference service that implements their API."""
